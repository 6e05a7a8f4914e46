"""An OpenAI-compatible server as the teacher's engine (`teacher.engine=server`): vLLM's, SGLang's, or any
that serves `/v1/completions` with token-id prompts and top-k log-probabilities.

Requests go out `concurrency` at a time (the server batches them), each with a timeout, retried with
exponential backoff on a refused connection or a 429/5xx answer. A server that cannot be reached, or that
serves another model than the teacher's, is refused before anything is loaded (`connect`). A server capdistill
launched that stops answering mid-round (its process died, or it no longer answers `/health`) is started again
and checked again, and the unanswered requests are sent again, up to `restarts` times in a run; past that, or
for a server at a given URL, it is a one-line error, and the rounds already saved stay (the same command
resumes).

capdistill can start the server itself (`teacher.server.launch`): the command runs in its own process
group, logs to the run's directory, is waited on through `/health`, and is stopped when capdistill exits,
however it exits (the kernel sends it SIGTERM if capdistill dies). Jobs of one sweep process that launch
the same command share one server.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from transformers import GenerationConfig, PreTrainedTokenizerBase
from urllib3.util.retry import Retry

from capdistill.errors import CapdistillError
from capdistill.losses.sparse import CacheSpec
from capdistill.prompting import prompt_ids
from capdistill.supervision.engines import Answer, Request, Row, RowEngine

log = logging.getLogger(__name__)
PROBE_PROMPT = "Count from one to five."  # the greedy probe that checks the server tokenizes as the teacher
PROBE_TOKENS = 8


def parse(choice: dict[str, Any], request: Request) -> dict[str, Any]:
    """One completion choice of vLLM's API as `Answer`'s fields, and its text."""
    logprobs = choice.get("logprobs") or {}
    rows = [token_row(r) for r in logprobs["top_logprobs"]] if request.logprobs else None
    prompt_rows = None
    if request.prompt_logprobs:
        prompt_rows = [None if r is None else token_row(r) for r in choice["prompt_logprobs"]]
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return {
        "ids": choice["token_ids"],
        "finish": finish,
        "rows": rows,
        "prompt_rows": prompt_rows,
        "text": choice["text"],
    }


def token_row(entries: dict[str, Any]) -> Row:
    """One position's top entries keyed by token id (`"token_id:N"` keys, vLLM's
    `return_tokens_as_token_ids`, or its prompt rows' `{"N": {"logprob": ...}}`)."""
    row = {}
    for key, value in entries.items():
        token = int(key.removeprefix("token_id:"))
        row[token] = float(value["logprob"] if isinstance(value, dict) else value)
    return row


class ServerEngine(RowEngine):
    """The teacher as served at `url` under the name `model`."""

    label = "server"

    def __init__(
        self,
        url: str,
        model: str,
        tokenizer: PreTrainedTokenizerBase,
        vocab: int,
        *,
        concurrency: int = 64,
        timeout_s: float = 600.0,
        retries: int = 3,
        process: LaunchedServer | None = None,
        relaunch: Callable[[], LaunchedServer] | None = None,
        restarts: int = 0,
        generation_config: GenerationConfig | None = None,
    ) -> None:
        """`process`: the server capdistill launched (None for one at a given URL); `relaunch` starts it again,
        at most `restarts` times over the engine's life, when it stops answering."""
        super().__init__(tokenizer, vocab, generation_config)
        self.url, self.model, self.concurrency, self.timeout = url.rstrip("/"), model, concurrency, timeout_s
        self.process, self.relaunch, self.restarts = process, relaunch, restarts
        self.cache: CacheSpec | None = None
        retry = Retry(
            total=retries,
            connect=retries,
            read=0,  # a request that timed out is not sent again: the server is hung or overloaded
            status=retries,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,  # completions are POSTs, and safe to repeat
            raise_on_status=False,
        )
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=concurrency))
        self.session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=concurrency))

    # ------------------------------------------------------------------ start

    def connect(self, cache: CacheSpec | None = None) -> None:
        """Refuse a server that is not there, serves another model, tokenizes otherwise than the teacher, or
        will not return the top-k rows `cache` keeps."""
        self.cache = cache
        try:
            listed = requests.get(f"{self.url}/v1/models", timeout=30)
            listed.raise_for_status()
            served = [m["id"] for m in listed.json()["data"]]
        except (requests.RequestException, ValueError, KeyError) as err:
            raise CapdistillError(
                f"no OpenAI-compatible server answers at teacher.server.url={self.url} ({type(err).__name__}): "
                "start one, or let capdistill start it with teacher.server.launch"
            ) from None
        if self.model not in served:
            raise CapdistillError(
                f"the server at {self.url} serves {served}, not the teacher {self.model!r}: point teacher.server.url "
                "at the teacher's server, or set teacher.server.model to its served name"
            )
        self.probe(cache.size if cache is not None else 1)

    def probe(self, k: int) -> None:
        """A short greedy completion with top-`k` rows: the ids the server writes must be the teacher tokenizer's
        and decode locally to the text the server returns (a server of another vocabulary fails here), and
        every position must come with `k` entries."""
        self.same_tokens()
        request = Request(prompt_ids(self.tokenizer, PROBE_PROMPT), PROBE_TOKENS, 0.0, 1.0, 0, k)
        try:
            answer = self.post(request, "probing")
        except CapdistillError as err:
            hint = (
                f" (top-{k} rows need a server started with --max-logprobs {k} or more)"
                if "logprobs" in str(err)
                else ""
            )
            raise CapdistillError(f"{err}{hint}") from None
        text, ids = answer["text"], answer["ids"]
        short = [len(row) for row in answer["rows"] or [] if len(row) < k]
        if short or not answer["rows"]:
            raise CapdistillError(f"the server at {self.url} returned {short or 'no'} entries per position, not {k}")
        outside = [i for i in ids if i >= len(self.tokenizer)]
        if outside or self.tokenizer.decode(ids, skip_special_tokens=True) != text:
            raise CapdistillError(
                f"the server at {self.url} ({self.model}) tokenizes otherwise than the teacher's tokenizer: its ids "
                f"{ids} decode locally to {self.tokenizer.decode(ids, skip_special_tokens=True)!r}, it wrote {text!r}"
            )
        if k > 1:  # a cache also scores what the teacher did not write token for token (prompt log-probs)
            self.score([(PROBE_PROMPT, ids)], CacheSpec("topk", k))

    def same_tokens(self) -> None:
        """The server's tokenizer (vLLM's `/tokenize`, where the server has it) must split text as the teacher's."""
        try:
            answer = requests.post(
                f"{self.url}/tokenize",
                json={"model": self.model, "prompt": PROBE_PROMPT, "add_special_tokens": False},
                timeout=30,
            )
        except requests.RequestException:
            return
        if answer.status_code != 200:  # a server without the endpoint: the greedy probe checks the ids
            return
        theirs, ours = answer.json().get("tokens"), self.tokenizer(PROBE_PROMPT, add_special_tokens=False).input_ids
        if theirs != ours:
            raise CapdistillError(
                f"the server at {self.url} ({self.model}) tokenizes otherwise than the teacher's tokenizer: "
                f"{PROBE_PROMPT!r} is {theirs} there, {ours} here"
            )

    # ------------------------------------------------------------------ requests

    def answer(self, requests_: Sequence[Request], what: str) -> list[Answer]:
        """The requests' answers; a launched server that stopped answering is started again (`restarts` times in
        all) and every request is sent again: each carries its own seed, so the restarted server samples as the
        first one would have (up to the rounding of how it batches requests)."""
        while True:
            try:
                return self.answer_once(requests_, what)
            except ServerLost as err:
                if self.relaunch is None or self.restarts < 1 or self.process is None or self.process.healthy():
                    raise
                self.restarts -= 1
                log.warning("%s; starting it again (%d more restarts allowed)", err.reason, self.restarts)
                self.process = self.relaunch()
                self.url = self.process.url
                self.connect(self.cache)

    def answer_once(self, requests_: Sequence[Request], what: str) -> list[Answer]:
        """The requests `concurrency` at a time; the first failure cancels those not yet sent."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self.post, r, what) for r in requests_]
            try:
                return [Answer(**{k: v for k, v in f.result().items() if k != "text"}) for f in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def post(self, request: Request, what: str) -> dict[str, Any]:
        """One completion, its answer as `Answer`'s fields (and its `text`, for the probe)."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "n": 1,
            # every other sampling parameter explicit: the server's own defaults never apply
            "top_k": request.top_k or -1,
            "min_p": request.min_p,
            "repetition_penalty": request.repetition_penalty,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
            "stop_token_ids": [self.tokenizer.eos_token_id],
            "ignore_eos": False,
            "skip_special_tokens": True,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }
        if request.logprobs:
            body["logprobs"] = request.logprobs
        if request.prompt_logprobs:
            body["prompt_logprobs"] = request.prompt_logprobs
        try:
            response = self.session.post(f"{self.url}/v1/completions", json=body, timeout=self.timeout)
        except requests.RequestException as err:
            raise self.lost(what, type(err).__name__) from None
        if response.status_code >= 500 and self.process is not None and not self.process.healthy():
            raise self.lost(what, f"HTTP {response.status_code}")  # its engine died under a live API front
        if response.status_code != 200:
            raise CapdistillError(
                f"the teacher server at {self.url} refused a request while {what}: HTTP {response.status_code} "
                f"{response.text[:300]!r}".replace("\n", " ")
            )
        try:
            return parse(response.json()["choices"][0], request)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise CapdistillError(
                f"the teacher server at {self.url} answered without what capdistill reads while {what} "
                f"({type(err).__name__} {err}): it needs vLLM's completions API (token_ids, token-id log-probs, "
                "prompt_logprobs)"
            ) from None

    def lost(self, what: str, cause: str) -> ServerLost:
        """What to say when the server stops answering (`cause`: the failed request's exception or status)."""
        died = ""
        if self.process is not None and self.process.exit_code() is not None:
            died = f"; the server process exited with code {self.process.exit_code()} (log: {self.process.log_path})"
        return ServerLost(f"the teacher server at {self.url} stopped answering while {what} ({cause}{died})")

    def close(self) -> None:
        self.session.close()


class ServerLost(CapdistillError):
    """The server stopped answering (no connection, or a request timed out): one capdistill launched can be
    started again (`ServerEngine.answer`); the message says what the run kept."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: the rounds saved so far are kept; run the same command again to resume this round")


class LaunchedServer:
    """A server process capdistill started from a command line, in its own process group."""

    def __init__(self, command: list[str], port: int, log_path: Path) -> None:
        self.command, self.port, self.log_path = command, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() reaches the engine processes it forks
                preexec_fn=die_with_parent,
            )
        atexit.register(self.stop)

    def exit_code(self) -> int | None:
        return self.process.poll()

    def healthy(self) -> bool:
        """Running and answering `/health` with 200: a server whose engine died may take seconds to exit."""
        try:
            return self.exit_code() is None and requests.get(f"{self.url}/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout_s: float) -> None:
        """Until `/health` answers 200; a one-line error if the process exits first or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                raise CapdistillError(
                    f"teacher.server.launch exited with code {self.exit_code()} before serving: {self.last_line()} "
                    f"(log: {self.log_path})"
                )
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise CapdistillError(
            f"teacher.server.launch did not answer /health within teacher.server.startup_timeout_s={timeout_s:g} s "
            f"(log: {self.log_path})"
        )

    def last_line(self) -> str:
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip()[:300] if lines else "(no output)"

    def stop(self) -> None:
        """SIGTERM to the server's process group (the engine processes it forked too), SIGKILL to whatever of
        the group is left after 30 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
            time.sleep(1)
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        atexit.unregister(self.stop)
        for key in [k for k, server in LAUNCHED.items() if server is self]:
            del LAUNCHED[key]


LAUNCHED: dict[tuple[str, ...], LaunchedServer] = {}  # this process's servers, by command line


try:
    PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it
except (OSError, AttributeError):  # not Linux
    PRCTL = None


def die_with_parent() -> None:
    """In the server's process, before it runs: the kernel sends it SIGTERM when capdistill dies (Linux)."""
    if PRCTL is not None:
        PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(template: str, *, model: str, port: int, name: str) -> list[str]:
    """`teacher.server.launch` with its fields filled in, as argv (a one-line error for a bad template)."""
    if "{port}" not in template:
        raise CapdistillError("teacher.server.launch must put the server on {port} (e.g. --port {port})")
    try:
        return shlex.split(template.format(model=model, port=port, name=name))
    except (KeyError, IndexError, ValueError) as err:
        raise CapdistillError(
            f"teacher.server.launch: {type(err).__name__} {err} (it may use {{model}}, {{port}} and {{name}})"
        ) from None


def launch(template: str, *, model: str, name: str, log_path: Path, startup_timeout_s: float) -> LaunchedServer:
    """The server `template` starts (`{model}`, `{port}`, `{name}` filled in), ready; a healthy one this process
    started from the same template is reused (a sweep's jobs share it), an unhealthy one replaced."""
    key = (template, model, name)
    running = LAUNCHED.get(key)
    if running is not None and running.healthy():
        return running
    for other in list(LAUNCHED.values()):  # a sweep job with another teacher (its GPUs are this one's), or a dying one
        other.stop()
    port = free_port()
    command = launch_command(template, model=model, port=port, name=name)
    log.info("starting the teacher server: %s (log: %s)", shlex.join(command), log_path)
    t0 = time.time()
    server = LaunchedServer(command, port, log_path)
    LAUNCHED[key] = server
    server.wait_ready(startup_timeout_s)
    log.info("teacher server ready at %s after %.0f s", server.url, time.time() - t0)
    return server
