import sys
def f(n):
    return f(n + 1) + 1
def execute_action(context):
    sys.setrecursionlimit(10**7)
    return f(0)
