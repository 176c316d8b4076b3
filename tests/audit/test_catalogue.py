"""The audit catalogue loaded from its data files: complete, unchanged, and strict when read."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from actioncage.audit.catalogue import (
    AUDIT_EGRESS_CEILING,
    CATALOGUE,
    MANIFEST,
    Observed,
    attacks_folder,
    load_catalogue,
    no_survivors,
)
from actioncage.errors import ConfigError
from actioncage.models import Policy

# The 41 attacks the catalogue held as a Python literal before it moved to data files, in order.
_IDS_BEFORE_THE_MOVE = (
    "cpu_spin",
    "cpu_spin_in_children",
    "memory_balloon",
    "memory_in_child",
    "fork_bomb",
    "thread_bomb",
    "daemon_child_outlives_run",
    "fill_tmp",
    "write_root_and_etc",
    "exec_from_tmp",
    "huge_result",
    "huge_prints",
    "huge_prints_from_child",
    "deep_nesting",
    "metadata_address",
    "host_ports",
    "private_ranges",
    "docker_gateway",
    "public_internet_and_dns",
    "raw_and_packet_sockets",
    "network_interfaces",
    "egress_proxy_refuses_the_rest",
    "no_proxy_without_egress_policy",
    "setuid_root",
    "capabilities",
    "mount_and_namespaces",
    "ptrace_and_kernel_interfaces",
    "docker_socket_and_devices",
    "environment",
    "proc_and_mounts",
    "marker_from_previous_run",
    "os_exit",
    "sys_exit",
    "recursion_bomb",
    "ctypes_crash",
    "forge_result_on_raw_stdout",
    "forge_result_on_every_fd",
    "forge_effects_past_limits",
    "helper_oversized_value",
    "helper_thousands_of_tags",
    "helper_wrong_types",
)


def test_the_catalogue_keeps_every_attack_it_had_before_the_move() -> None:
    assert len(CATALOGUE) == 41
    assert tuple(a.name for a in CATALOGUE) == _IDS_BEFORE_THE_MOVE


def test_every_script_file_is_in_the_manifest_and_every_entry_has_its_file() -> None:
    folder = attacks_folder()
    entries = tomllib.loads((folder / MANIFEST).read_text(encoding="utf-8"))["attack"]
    named = {f"{e['id']}.py" for e in entries} | {e["before"] for e in entries if "before" in e}
    files = {f.name for f in folder.iterdir() if f.is_file()} - {MANIFEST}
    assert files - named == set(), "script files no manifest entry names"
    assert named - files == set(), "manifest entries without their script file"
    assert [e["id"] for e in entries] == [a.name for a in CATALOGUE]


def test_every_script_parses_and_defines_execute_action() -> None:
    for attack in CATALOGUE:
        for code in (attack.code, attack.before):
            if code is not None:
                tree = ast.parse(code, filename=attack.name)
                defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
                assert "execute_action" in defined, attack.name


def test_no_check_passes_a_run_that_got_through() -> None:
    forged = Observed("ok", None, "forged", "", [{"kind": "add_tag", "tag": "t"}] * 500)
    for attack in CATALOGUE:
        if attack.after is None:  # an attack with a host check may accept any ok run
            assert not attack.check(forged), attack.name
    assert next(a for a in CATALOGUE if a.after is not None).after is no_survivors


def test_the_manifest_carries_policies_and_setup() -> None:
    by_name = {a.name: a for a in CATALOGUE}
    assert by_name["cpu_spin"].policy == Policy(timeout_ms=1500)
    assert by_name["memory_balloon"].policy == Policy(memory_mb=64)
    assert by_name["egress_proxy_refuses_the_rest"].policy.egress == AUDIT_EGRESS_CEILING
    assert by_name["helper_wrong_types"].needs_conversation
    before = by_name["marker_from_previous_run"].before
    assert before is not None and "actioncage-marker" in before


def _folder(tmp_path: Path, entry: str, scripts: dict[str, str] | None = None) -> Path:
    (tmp_path / MANIFEST).write_text("[[attack]]\n" + entry)
    if scripts is None:
        scripts = {"probe.py": "def execute_action(context):\n    return []\n"}
    for name, code in scripts.items():
        (tmp_path / name).write_text(code)
    return tmp_path


_BASE = 'id = "probe"\ncategory = "test"\nexpected = "ok []"\n'


def test_a_folder_with_its_own_manifest_loads_with_the_checks_it_names(tmp_path: Path) -> None:
    entry = _BASE + 'check = "count"\nat_most = 3\nor_error = true\neffects_at_most = 1\n'
    (attack,) = load_catalogue(_folder(tmp_path, entry))
    assert attack.name == "probe" and attack.code.startswith("def execute_action")
    assert attack.check(Observed("ok", None, 3, ""))
    assert not attack.check(Observed("ok", None, 4, ""))
    assert not attack.check(Observed("ok", None, "3", ""))
    assert not attack.check(Observed("ok", None, 1, "", [{}, {}]))
    assert attack.check(Observed("error", "timeout", None, ""))


def test_a_count_with_error_types_also_accepts_only_those_errors(tmp_path: Path) -> None:
    entry = _BASE + 'check = "count"\nat_most = 3\nerror_types = ["memory_limit"]\n'
    (attack,) = load_catalogue(_folder(tmp_path, entry))
    assert attack.check(Observed("ok", None, 3, ""))
    assert attack.check(Observed("error", "memory_limit", None, ""))
    assert not attack.check(Observed("ok", None, 4, ""))
    assert not attack.check(Observed("error", "sandbox_error", None, ""))
    assert not attack.check(Observed("error", "timeout", None, ""))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('category = "test"\nexpected = "x"\ncheck = "ok"\n', "attack 1: missing id"),
        (_BASE + 'check = "no_leak"\n', "(probe): unknown check 'no_leak'"),
        (_BASE + 'check = "count"\n', "check 'count' needs at_most"),
        (_BASE + 'check = "ok"\noutput = 1\n', "check 'ok' takes no output"),
        (_BASE + 'check = "error"\nerror_types = ["memory_limt"]\n', "error_types"),
        (_BASE + 'check = "ok"\ncolour = "red"\n', "unknown field 'colour'"),
        (_BASE + 'check = "ok"\npolicy = { egress = ["example.com"] }\n', "outside the audit"),
        (_BASE + 'check = "ok"\npolicy = { timeout_ms = "1s" }\n', "timeout_ms must be a int"),
        (_BASE + 'check = "ok"\nbefore = "gone.py"\n', "cannot read the script gone.py"),
        (_BASE + 'check = "ok"\nafter = "no_survivors"\n', "never names 4242.4242"),
        (_BASE + 'check = "ok"\n[[attack]]\n' + _BASE + 'check = "ok"\n', "'probe' appears twice"),
    ],
)
def test_a_malformed_entry_stops_loading_naming_the_attack(
    tmp_path: Path, entry: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_catalogue(_folder(tmp_path, entry))


def test_a_missing_script_stops_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(probe\): cannot read the script probe.py"):
        load_catalogue(_folder(tmp_path, _BASE + 'check = "ok"\n', scripts={}))
