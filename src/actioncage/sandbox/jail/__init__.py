"""sandbox/jail/: the jail tier: bubblewrap namespaces, the control plane's cgroups, seccomp."""
