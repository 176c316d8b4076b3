import builtins, os
def execute_action(context):
    open('/tmp/actioncage-marker', 'w').write('x')
    builtins.actioncage_marker = True
    os.environ['ACTIONCAGE_MARKER'] = '1'
    return 'planted'
