"""Run the project's scripts in processes forked from a server that has already imported torch, ignite and the
project's modules (multiprocessing's forkserver): each run is still a process of its own, with its own argv,
environment, working folder, output, exit status and signals, as a user's `python SCRIPT ...`; it only skips the
2 seconds of imports that every script would otherwise pay again (about 150 runs in the test suite)."""
import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback

# imported once, in the server, before it forks (importing starts no thread: forking stays safe)
PRELOAD = ["torch", "torchvision.transforms.v2", "ignite.distributed", "ignite.engine", "ignite.handlers",
           "ignite.metrics", "cv2", "PIL.Image", "skimage.color", "matplotlib.figure", "tqdm", "common", "photos",
           "training"]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def run(script: str, args: list[str], env: dict, cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """`python script *args` with env in cwd: -> the CompletedProcess subprocess.run would give (text output).
    Raises subprocess.TimeoutExpired, the process killed, after timeout seconds."""
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        process = _context.Process(target=_main, args=(script, args, env, cwd, out, err))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([sys.executable, script, *args], timeout)
        stdout, stderr = (open(path, encoding="utf-8", errors="replace").read() for path in (out, err))
    return subprocess.CompletedProcess([sys.executable, script, *args], process.exitcode, stdout, stderr)


def _main(script, args, env, cwd, out, err):
    """In the forked process: become `python script *args` writing into the files out and err, run it as
    __main__, exit with its status."""
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script` puts the script's folder first
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:  # as the interpreter reads it: None is 0, a number is the status, a message 1
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
