import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    import builtins
    if os.path.exists('/tmp/actioncage-marker'):
        leaks.append('file marker survived')
    if getattr(builtins, 'actioncage_marker', None):
        leaks.append('global marker survived')
    if os.environ.get('ACTIONCAGE_MARKER'):
        leaks.append('environment marker survived')
    return leaks
