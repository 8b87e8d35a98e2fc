"""MedTuningCore where POSIX-only modules and calls do not exist (Windows), and every platform
branch of the core, simulated on whichever platform the tests run on.

Whole runs happen in a subprocess (this process's modules stay as they are) in which `resource`,
`fcntl`, `termios`, `pwd` and `grp` cannot be imported and sys.platform is "win32". Third-party
libraries are loaded before sys.platform changes where a run needs them: their own platform
code cannot be simulated (on Windows they are Windows builds). Single branches are simulated
in this process with monkeypatch: sys.platform, fake modules, missing os/signal functions.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import inspect
import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT

from MedTuningCore import process_runner
from MedTuningCore.cli import app as cli
from MedTuningCore.process_runner import BackgroundProcess, popen_platform_options
from MedTuningCore.sets import library
from MedTuningCore.training import trainer as training

POSIX_ONLY_MODULES = ("resource", "fcntl", "termios", "pwd", "grp")
HELP_WIDTH = "100"  # COLUMNS for argparse, the same in both processes

# Every `medtuning ... --help` there is.
HELP_COMMANDS = [[], ["model-info"], ["segment"], ["sets"], ["sets", "list"], ["sets", "show"], ["sets", "install"],
                 ["sets", "restore"], ["sets", "verify"], ["sets", "remove"], ["sets", "export"], ["backbones"],
                 ["backbones", "list"], ["backbones", "import"], ["backbones", "verify"], ["doctor"],
                 ["finetune"], ["evaluate"], ["compare"], ["demo"]]


def run_as_windows(code: str, load_libraries: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` without the POSIX-only modules and with sys.platform "win32"."""
    prelude = "from __future__ import annotations\nimport sys\n"
    prelude += "".join(f"sys.modules[{name!r}] = None\n" for name in POSIX_ONLY_MODULES)
    if load_libraries:
        prelude += "import numpy, SimpleITK, safetensors, timm, torch, filelock\n"
    prelude += 'sys.platform = "win32"\n'
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=timeout, env={**os.environ, "COLUMNS": HELP_WIDTH})


def captured_help(parse, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        parse([*argv, "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


# -- the package, `medtuning --help` and a real run, as on Windows ----------------------

def test_every_module_of_the_core_imports_as_on_windows():
    result = run_as_windows("""
        import pkgutil, MedTuningCore
        names = [m.name for m in pkgutil.walk_packages(MedTuningCore.__path__, "MedTuningCore.")
                 if m.name != "MedTuningCore.__main__"]  # __main__ runs the command line
        for name in names:
            __import__(name)
        print(len(names))
    """)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 30


def test_help_imports_no_command_module_and_no_torch():
    """What the before-stop check runs: `medtuning --help` with the POSIX-only modules gone."""
    result = run_as_windows("""
        from MedTuningCore.cli import app as cli
        try:
            cli.main(["--help"])
        except SystemExit as e:
            assert e.code == 0, e.code
        print(sorted(m for m in sys.modules if m.startswith("MedTuningCore")), "torch" in sys.modules)
    """, load_libraries=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "['MedTuningCore', 'MedTuningCore.cli', 'MedTuningCore.cli.app'] False"
    assert "model-info" in result.stdout and "demo" in result.stdout


def test_every_help_is_the_same_as_the_parser_with_all_commands_gives(monkeypatch):
    """`medtuning [CMD] --help` as on Windows, against the parser built with every command's
    module imported (how the command line was built before): the same text, so the help lines
    in cli.COMMANDS have not drifted from the command modules' own."""
    result = run_as_windows(f"""
        import contextlib, io, json
        from MedTuningCore.cli import app as cli
        texts = []
        for argv in {HELP_COMMANDS!r}:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                cli.main([*argv, "--help"])
            texts.append(out.getvalue())
        print(json.dumps(texts))
    """)
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("COLUMNS", HELP_WIDTH)
    eager = cli.build_parser()
    expected = [captured_help(eager.parse_args, argv) for argv in HELP_COMMANDS]
    assert json.loads(result.stdout.splitlines()[-1]) == expected


def test_a_real_segmentation_runs_as_on_windows(tmp_path):
    import SimpleITK as sitk
    from segment_helpers import synthetic_volume, tiny

    sitk.WriteImage(synthetic_volume(), str(tmp_path / "in.nrrd"))
    (tmp_path / "set.json").write_text(json.dumps(tiny()))
    argv = ["segment", str(tmp_path / "in.nrrd"), "--set", str(tmp_path / "set.json"), "-o",
            str(tmp_path / "out.nrrd"), "--progress", "json"]
    result = run_as_windows(f"""
        from MedTuningCore.cli import app as cli
        sys.exit(cli.main({argv!r}))
    """)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["event"] == "done"
    out = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert out.GetSize() == synthetic_volume().GetSize()


def test_a_real_fine_tuning_runs_as_on_windows_and_reports_the_peak_working_set(tmp_path):
    """The whole training path, which once imported `resource`; psapi is a stand-in reporting
    512 MiB (the call itself is tested below), so the figure shows the Windows branch ran."""
    from test_process_runner import blob_finetune_args

    out = tmp_path / "blob.safetensors"
    argv = blob_finetune_args(tmp_path, out) + ["--epochs", "1", "--progress", "json"]
    result = run_as_windows(textwrap.dedent(inspect.getsource(FakeWinDLL)) + f"""
import ctypes
ctypes.WinDLL = FakeWinDLL.reporting(512 * 2**20)
from MedTuningCore.cli import app as cli
sys.exit(cli.main({argv!r}))
""")
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["event"] == "done" and done["peak_memory_mb"] == 512.0 and out.is_file()


def test_the_runner_imports_without_posix_process_group_calls():
    result = run_as_windows("""
        import os, signal
        del os.getpgid, os.killpg, signal.SIGKILL
        from MedTuningCore.process_runner import BackgroundProcess
        print("ok")
    """, load_libraries=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# -- process_runner: creation options and cancel, per platform ------------------------

def test_windows_options_hide_the_console_and_detach_the_group():
    options = popen_platform_options("win32")
    assert set(options) == {"creationflags", "startupinfo"}
    assert options["creationflags"] == 0x00000200 | 0x08000000  # CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    assert options["startupinfo"].dwFlags & 0x1  # STARTF_USESHOWWINDOW
    assert options["startupinfo"].wShowWindow == 0  # SW_HIDE


def test_windows_options_use_subprocess_s_own_startupinfo_where_it_exists(monkeypatch):
    """On Windows, subprocess has STARTUPINFO and the constants: those are used."""

    class StartupInfo:
        def __init__(self):
            self.dwFlags, self.wShowWindow = 0x100, 5  # STARTF_USESTDHANDLES set by someone; SW_SHOW

    for name, value in (("STARTUPINFO", StartupInfo), ("CREATE_NEW_PROCESS_GROUP", 0x200),
                        ("CREATE_NO_WINDOW", 0x08000000), ("STARTF_USESHOWWINDOW", 1), ("SW_HIDE", 0)):
        monkeypatch.setattr(subprocess, name, value, raising=False)
    info = popen_platform_options("win32")["startupinfo"]
    assert isinstance(info, StartupInfo) and info.dwFlags == 0x101 and info.wShowWindow == 0


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_posix_options_start_a_new_session(platform):
    assert popen_platform_options(platform) == {"start_new_session": True}


class FakeChild:
    """A child process that runs until taskkill stops it."""

    pid = 4242

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.stdout, self.stderr = io.StringIO(""), io.StringIO("")

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


@pytest.fixture
def as_windows(monkeypatch):
    """sys.platform "win32", os.getpgid, os.killpg and signal.SIGKILL gone, and Popen and run
    recorded instead of started."""
    monkeypatch.setattr(sys, "platform", "win32")
    for owner, name in ((os, "getpgid"), (os, "killpg"), (signal, "SIGKILL")):
        monkeypatch.delattr(owner, name, raising=False)
    calls = SimpleNamespace(popen=[], run=[], child=FakeChild())

    def popen(args, **kwargs):
        calls.popen.append(kwargs)
        return calls.child

    def run(args, **kwargs):
        calls.run.append((args, kwargs))
        if args[0] == "taskkill":
            calls.child.returncode = 1  # what a process killed by taskkill /F exits with
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_a_windows_job_starts_hidden_in_its_own_group(as_windows):
    as_windows.child.returncode = 0
    runner = BackgroundProcess(["medtuning", "segment"])
    runner.start()
    assert runner.wait(timeout=10).returncode == 0
    (kwargs,) = as_windows.popen
    assert "start_new_session" not in kwargs
    assert kwargs["creationflags"] == 0x08000200 and kwargs["startupinfo"].wShowWindow == 0


def test_cancel_on_windows_uses_taskkill_hidden_and_never_a_process_group(as_windows):
    runner = BackgroundProcess(["medtuning", "segment"])
    runner.start()
    runner.cancel()  # os.killpg and signal.SIGKILL are gone: using them would raise
    state = runner.wait(timeout=10)
    ((args, kwargs),) = as_windows.run
    assert args == ["taskkill", "/T", "/F", "/PID", "4242"]
    assert kwargs["creationflags"] & 0x08000000 and kwargs["startupinfo"].wShowWindow == 0
    assert state.cancelled and state.error is None and not state.running


def test_a_posix_job_starts_in_a_new_session(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    calls = []
    child = FakeChild()
    child.returncode = 0
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kwargs: calls.append(kwargs) or child)
    runner = BackgroundProcess(["medtuning", "segment"])
    runner.start()
    assert runner.wait(timeout=10).returncode == 0
    assert calls[0]["start_new_session"] is True and "creationflags" not in calls[0]


# -- peak memory, per platform ----------------------------------------------------------

def fake_resource(max_rss: int) -> SimpleNamespace:
    return SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who: SimpleNamespace(ru_maxrss=max_rss))


def test_peak_memory_on_linux_counts_kib(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setitem(sys.modules, "resource", fake_resource(3 * 1024))
    assert training.process_peak_memory_mb() == 3.0


def test_peak_memory_on_macos_counts_bytes(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setitem(sys.modules, "resource", fake_resource(3 * 2**20))
    assert training.process_peak_memory_mb() == 3.0


class FakeWinDLL:
    """ctypes.WinDLL for kernel32 and psapi: GetProcessMemoryInfo reports `peak_bytes` as
    PeakWorkingSetSize (or fails); `calls` records its handle and size arguments. Plain
    functions, as ctypes' own take the restype and argtypes the code sets."""

    calls: list[tuple[int, int]] = []
    peak_bytes, succeeds = 0, True

    def __init__(self, name: str) -> None:
        fake = type(self)

        def get_current_process() -> int:
            return -1  # the documented pseudo-handle of the calling process

        def get_process_memory_info(handle, counters, size) -> int:
            fake.calls.append((handle, size))
            counters._obj.PeakWorkingSetSize = fake.peak_bytes  # counters is byref(PROCESS_MEMORY_COUNTERS)
            return int(fake.succeeds)

        assert name in ("kernel32", "psapi"), name
        self.GetCurrentProcess, self.GetProcessMemoryInfo = get_current_process, get_process_memory_info

    @classmethod
    def reporting(cls, peak_bytes: int, succeeds: bool = True) -> type[FakeWinDLL]:
        return type("FakeWinDLLFor", (cls,), {"calls": [], "peak_bytes": peak_bytes, "succeeds": succeeds})


def test_peak_memory_on_windows_is_the_peak_working_set(monkeypatch):
    win_dll = FakeWinDLL.reporting(5 * 2**20)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "resource", None)  # as on Windows: importing it raises
    monkeypatch.setattr(ctypes, "WinDLL", win_dll, raising=False)
    assert training.process_peak_memory_mb() == 5.0
    assert win_dll.calls == [(-1, ctypes.sizeof(training.ProcessMemoryCounters))]


def test_peak_memory_on_windows_is_nan_when_the_call_fails(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "WinDLL", FakeWinDLL.reporting(5 * 2**20, succeeds=False), raising=False)
    assert math.isnan(training.process_peak_memory_mb())


def test_process_memory_counters_has_the_win32_layout():
    """PROCESS_MEMORY_COUNTERS: two DWORDs, then eight SIZE_Ts (72 bytes on 64-bit Windows, 40 on 32-bit)."""
    size_t = ctypes.sizeof(ctypes.c_size_t)
    assert ctypes.sizeof(training.ProcessMemoryCounters) == 8 + 8 * size_t
    assert training.ProcessMemoryCounters.PeakWorkingSetSize.offset == 8


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="platform: needs Linux /proc")
def test_peak_memory_here_matches_the_kernel_s_own_figure():
    """On the real platform: ru_maxrss read with the right unit is the kernel's VmHWM (peak RSS)."""
    status = Path("/proc/self/status").read_text()
    vm_hwm_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    assert training.process_peak_memory_mb() == pytest.approx(vm_hwm_kib / 1024, rel=0.1)


def test_peak_memory_on_a_gpu_is_torch_s_allocated_peak(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 7 * 2**20)
    assert training.peak_memory_mb(torch.device("cuda", 0)) == 7.0


# -- the library: where it lives and how it is locked, per platform ---------------------

@pytest.mark.parametrize("platform, env, expected", [
    ("win32", {"LOCALAPPDATA": "C:/Users/u/AppData/Local"}, Path("C:/Users/u/AppData/Local/MedTuning")),
    ("win32", {}, Path.home() / "AppData" / "Local" / "MedTuning"),
    ("darwin", {}, Path.home() / "Library" / "Application Support" / "MedTuning"),
    ("linux", {"XDG_DATA_HOME": "/data"}, Path("/data/medtuning")),
    ("linux", {}, Path.home() / ".local" / "share" / "medtuning"),
])
def test_default_library_dir_per_platform(monkeypatch, platform, env, expected):
    for name in ("MEDTUNING_HOME", "LOCALAPPDATA", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "platform", platform)
    assert library.default_library_dir() == expected


LOCKED_APPENDS = """
import sys, time
from pathlib import Path
from MedTuningCore.sets.library import exclusive_lock

lock, log, who = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
Path(sys.argv[4]).touch()  # ready: the parent starts the race when every child is here
while not Path(sys.argv[5]).exists():
    time.sleep(0.01)
for _ in range(5):
    with exclusive_lock(lock):
        with log.open("a") as handle:
            handle.write(f"begin {who}\\n")
        time.sleep(0.02)  # another holder would write its line in here
        with log.open("a") as handle:
            handle.write(f"end {who}\\n")
"""


def test_the_library_lock_excludes_other_processes(tmp_path):
    """Three processes append begin/end pairs under the lock at once: no pair is ever split by
    another process's line (filelock: flock on POSIX, msvcrt on Windows, the same code)."""
    log, go = tmp_path / "log.txt", tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", LOCKED_APPENDS, str(tmp_path / ".lock"), str(log), str(i),
                                  str(tmp_path / f"ready{i}"), str(go)], cwd=REPO_ROOT) for i in range(3)]
    try:
        while not all((tmp_path / f"ready{i}").exists() for i in range(3)):
            assert all(c.poll() is None for c in children), "a child ended before the race"
            time.sleep(0.01)
        go.touch()
        assert [c.wait(timeout=300) for c in children] == [0, 0, 0]
    finally:
        for child in children:
            child.kill()
    lines = log.read_text().splitlines()
    assert len(lines) == 3 * 5 * 2
    pairs = [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
    assert all(begin == f"begin {end[4:]}" and end.startswith("end ") for begin, end in pairs), lines


# -- an audit of the sources --------------------------------------------------------------

# POSIX-only names and the functions that may use them (each reached only on POSIX, tested above).
POSIX_ONLY_NAMES = {"resource", "fcntl", "termios", "pwd", "grp", "getpgid", "killpg", "setsid", "SIGKILL",
                    "fork", "getuid", "geteuid", "chown", "start_new_session"}
ALLOWED = {
    ("trainer.py", "process_peak_memory_mb"): {"resource"},
    ("process_runner.py", "_kill_group"): {"getpgid", "killpg", "SIGKILL"},
    ("process_runner.py", "popen_platform_options"): {"start_new_session"},
}


def posix_only_uses(path: Path) -> set[tuple[str, str]]:
    """(enclosing function, name) for each POSIX-only name used in a file: imported, an
    attribute or a keyword; module level is ''."""
    found = set()

    def visit(node: ast.AST, function: str) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module.split(".")[0]]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]  # a dict key such as {"start_new_session": True}
        found.update((function, n) for n in names if n in POSIX_ONLY_NAMES)
        inner = node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else function
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text()), "")
    return found


def test_posix_only_names_appear_only_in_their_guarded_functions():
    unexpected = []
    for path in sorted((REPO_ROOT / "MedTuningCore").rglob("*.py")):
        for function, name in posix_only_uses(path):
            if name not in ALLOWED.get((path.name, function), set()):
                unexpected.append(f"{path.relative_to(REPO_ROOT)}: {name} in {function or 'the module'}")
    assert not unexpected, unexpected


def test_no_shell_device_files_or_posix_permissions():
    """Text patterns that only work on POSIX, none of which the core needs."""
    for path in sorted((REPO_ROOT / "MedTuningCore").rglob("*.py")):
        text = path.read_text()
        for pattern in ("shell=True", "/dev/", ".chmod(", "os.fork", "os.getuid"):
            assert pattern not in text, f"{path.relative_to(REPO_ROOT)}: {pattern}"


def test_the_cancelled_exit_code_is_finetune_s():
    from MedTuningCore.cli.finetune import EXIT_CANCELLED

    assert process_runner.CANCELLED_EXIT_CODE == EXIT_CANCELLED
