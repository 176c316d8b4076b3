import sys
def execute_action(context):
    sys.exit(0)
