import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for call in (lambda: add_conversation_tag(context, 123),
                 lambda: add_conversation_tag(context, None),
                 lambda: set_conversation_metadata(context, 5, 'v'),
                 lambda: set_conversation_metadata(context, 'k', object()),
                 lambda: add_conversation_event(context, 3.5),
                 lambda: set_conversation_metadata({'conversation': {'id': 'x'}}, 'k', 1),
                 lambda: llm_classify_binary(None, None)):
        try:
            call()
            leaks.append('accepted a wrong type')
        except Exception:
            pass
    return leaks
