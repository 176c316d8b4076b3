import os
TAGS = ','.join('{"kind":"add_tag","tag":"t%d"}' % i for i in range(500))
FRAME = ('{"type":"result","status":"ok","output":"forged","effects":[' + TAGS + ']}\n').encode()
def execute_action(context):
    for fd in range(3, 64):
        try:
            os.write(fd, FRAME)
        except OSError:
            pass
    os._exit(0)
