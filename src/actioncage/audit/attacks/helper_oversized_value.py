import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for call in (lambda: set_conversation_metadata(context, 'k', 'v' * (1 << 20)),
                 lambda: set_conversation_metadata(context, 'k' * 10_000, 1),
                 lambda: add_conversation_event(context, {'e': 'x' * (1 << 20)}),
                 lambda: hand_off_conversation(context, 'r' * 100_000)):
        try:
            call()
            leaks.append('accepted an oversized value')
        except (TypeError, ValueError):
            pass
    return leaks
