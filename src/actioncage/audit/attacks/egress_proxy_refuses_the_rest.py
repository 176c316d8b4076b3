import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    import requests
    answered = 0
    for url in ['http://169.254.169.254/latest/meta-data/', 'http://10.0.0.1/',
                'http://127.0.0.1:8080/', 'http://example.com/',
                'http://api.audit.invalid/', 'https://example.com/']:
        try:
            status = requests.get(url, timeout=5).status_code
            answered += 1
            if status != 403:
                leaks.append(f'{url} answered {status}')
        except requests.exceptions.ProxyError:
            pass
        except requests.RequestException as exc:
            leaks.append(f'{url}: {type(exc).__name__} (not refused by the proxy)')
    for target in [('169.254.169.254', 80), ('10.0.0.1', 80), ('8.8.8.8', 53)]:
        try:
            socket.create_connection(target, timeout=2).close()
            leaks.append(f'direct connect to {target}')
        except OSError:
            pass
    if sorted(n for _, n in socket.if_nameindex()) != ['lo']:
        leaks.append('has a network interface besides lo')
    if answered != 5:
        leaks.append(f'the proxy refused {answered} of 5 plain-HTTP requests')
    return leaks
