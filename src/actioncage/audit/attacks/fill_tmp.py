def execute_action(context):
    written = 0
    try:
        with open('/tmp/fill', 'wb') as f:
            while written < (256 << 20):
                f.write(b'x' * (1 << 20))
                written += 1 << 20
                f.flush()
    except OSError:
        pass
    return written >> 20
