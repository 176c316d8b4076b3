import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    try:
        socket.getaddrinfo('example.com', 443)
        leaks.append('resolved example.com')
    except OSError:
        pass
    import requests
    try:
        requests.get('https://example.com', timeout=2)
        leaks.append('fetched example.com')
    except requests.RequestException:
        pass
    return leaks
