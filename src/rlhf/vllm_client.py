"""A client for a separately started `vllm serve`: token ids in, token ids and per-token log-probs out.

rlhf never imports vLLM: the server runs in its own environment (its version pins nothing of ours) and
this module speaks HTTP to it with httpx. What it uses of the server (docs/vllm.md says how to start it):

- ``POST /v1/completions`` with ``prompt`` as lists of token ids, ``return_token_ids`` and ``logprobs=0``
  (the sampled token's log-prob only; ``return_tokens_as_token_ids`` as well, so that servers older than
  ``return_token_ids`` still name the tokens): the response is never re-tokenised, the ids the sampler
  drew are the ids the trainer scores;
- ``GET /health`` and ``GET /v1/models``;
- weight sync (``VLLM_SERVER_DEV_MODE=1``): ``POST /pause``, ``/collective_rpc`` with ``reload_weights``
  from a directory the trainer saved, ``/reset_prefix_cache`` (cached prompt keys were computed with the
  old weights), ``/resume``; for LoRA ``POST /v1/load_lora_adapter`` (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``).

Every call has a deadline (connect, and the whole answer, not only each read) and every failure -- no
server, a hang, an error status, an answer that is not what was asked -- is one `UserError` line naming
the server's URL and what failed, never a hang.
"""

from __future__ import annotations

import json
import math
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rlhf.errors import UserError

DEV_MODE_HINT = "start the server with VLLM_SERVER_DEV_MODE=1 (docs/vllm.md)"
UNTIE_OVERRIDES = '{"tie_word_embeddings": false}'  # `vllm serve --hf-overrides` untying a tied LM head
UNTIE_FLAG = f"--hf-overrides '{UNTIE_OVERRIDES}'"


@dataclass
class EngineSamples:
    """Responses sampled by the engine, prompt-major: rows p * n ... p * n + n - 1 continue prompt p."""

    token_ids: list[list[int]]  # generated tokens, up to and including the stop token
    logprobs: list[list[float]]  # the sampler's log-prob of each generated token
    finished: list[bool]  # whether each response emitted the stop token


class VLLMClient:
    """HTTP client of one `vllm serve` (or the test stand-in speaking the same routes).

    url: the server's base URL (``http://host:8000``); model: the served model name (default: the first
    the server lists); timeout: seconds allowed for each call's whole answer (generation included);
    connect_timeout: seconds to open a connection; option: the setting that named `url` (for errors).
    """

    def __init__(
        self, url: str, model: str = "", timeout: float = 300.0, connect_timeout: float = 5.0,
        option: str = "ppo.vllm_url",
    ) -> None:  # fmt: skip
        if not url.startswith(("http://", "https://")):
            raise UserError(f"{option} must be an http:// or https:// URL; got {url!r}")
        self.url = url.rstrip("/")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=connect_timeout))
        self.model = model
        self.base_model = model

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ transport

    def _call(
        self, method: str, path: str, what: str, timeout: float | None = None, hint: str = "", **kwargs: Any
    ) -> bytes:
        """One request; its body, read under a deadline of `timeout` seconds for the whole answer, so a
        server that trickles bytes cannot hold the trainer either. Raises UserError on any failure, with
        `hint` added when the server does not know the route (404)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        body = bytearray()
        expired = threading.Event()
        try:
            timeouts = httpx.Timeout(limit, connect=min(limit, self.connect_timeout))
            with self._http.stream(method, path, timeout=timeouts, **kwargs) as response:
                # the headers came within `limit`; the body gets what is left: a watchdog closes the
                # connection at the deadline, which ends a read that trickles in byte by byte
                def expire() -> None:
                    expired.set()
                    response.close()

                watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), expire)
                watchdog.start()
                try:
                    for chunk in response.iter_bytes():
                        body += chunk
                finally:
                    watchdog.cancel()
            if expired.is_set():
                raise httpx.ReadTimeout("the answer took too long")
        except httpx.ConnectError as err:
            raise UserError(
                f"vLLM server {self.url}: cannot connect for {what} ({err}); is `vllm serve` running there?"
            ) from None
        except (httpx.HTTPError, httpx.StreamError) as err:  # timed out, dropped mid-answer, bad protocol
            if isinstance(err, httpx.TimeoutException) or expired.is_set():
                raise UserError(
                    f"vLLM server {self.url}: {what} ({method} {path}) gave no complete answer within "
                    f"{limit:g} s; the server is hung or overloaded"
                ) from None
            raise UserError(f"vLLM server {self.url}: {what} ({method} {path}) failed: {err!r}") from None
        if response.status_code >= 400:
            text = bytes(body).decode(errors="replace").replace("\n", " ")[:300]
            extra = f"; {hint}" if hint and response.status_code == 404 else ""
            raise UserError(
                f"vLLM server {self.url}: {what} ({method} {path}) answered {response.status_code}: "
                f"{text}{extra}"
            )
        return bytes(body)

    def _call_json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        """`_call`, its body parsed as JSON; an answer that is not JSON is a UserError."""
        body = self._call(method, path, what, **kwargs)
        try:
            return json.loads(body)
        except ValueError:
            raise UserError(
                f"vLLM server {self.url}: {what} answered with something that is not JSON: {body[:200]!r}"
            ) from None

    # ------------------------------------------------------------------ health

    def health(self, timeout: float = 10.0) -> None:
        """Raise UserError unless ``GET /health`` answers 200 within `timeout` seconds."""
        self._call("GET", "/health", "the health check", timeout=timeout)

    def served_model(self) -> str:
        """The served model's name (``GET /v1/models``, the first listed); remembered as the default."""
        answer = self._call_json("GET", "/v1/models", "listing the models", timeout=30.0)
        try:
            name = answer["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            raise UserError(
                f"vLLM server {self.url}: /v1/models lists no model: {str(answer)[:200]}"
            ) from None
        if not self.model:
            self.model = self.base_model = name
        return name

    def unties_head(self) -> bool | None:
        """Whether the server was started with its LM head untied from the input embeddings
        (`UNTIE_FLAG`), read from ``GET /server_info`` (dev mode); None when the server does not say."""
        try:
            info = self._call_json("GET", "/server_info", "reading the server's configuration",
                                   params={"config_format": "json"}, timeout=60.0)  # fmt: skip
            overrides = info["vllm_config"]["model_config"]["hf_overrides"] or {}
        except (UserError, KeyError, TypeError):
            return None
        return overrides.get("tie_word_embeddings") is False

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: list[list[int]],
        n: int,
        max_tokens: int,
        stop_id: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> EngineSamples:
        """n responses to each prompt (lists of token ids), each up to `max_tokens` tokens, stopping at
        `stop_id` only (the server's own EOS list is ignored, so that a response ends exactly where the
        trainer's `truncate_after_eos` ends it).

        With a `seed`, prompt p is sent in its own request with seed `seed + p * n` (vLLM gives its n
        samples seed + 0 ... n - 1), all requests at once: reproducible, and distinct prompts never
        share a random stream. Without one, all prompts go in one request.
        """
        if not prompts:
            return EngineSamples([], [], [])
        if not self.model:
            self.served_model()
        body = {
            "model": self.model,
            "max_tokens": max_tokens,
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k if top_k > 0 else -1,  # vLLM's "off" is -1 (0 is refused by older versions)
            "logprobs": 0,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "ignore_eos": True,
            "stop_token_ids": [stop_id],
            "skip_special_tokens": False,
        }
        if seed is None:
            choices = self._complete({**body, "prompt": prompts}, len(prompts) * n)
        else:
            with ThreadPoolExecutor(max_workers=min(32, len(prompts))) as pool:
                parts = pool.map(
                    lambda p: self._complete({**body, "prompt": [prompts[p]], "seed": seed + p * n}, n),
                    range(len(prompts)),
                )
                choices = [choice for part in parts for choice in part]
        samples = EngineSamples([], [], [])
        for row, choice in enumerate(choices):
            ids, logprobs = self._tokens(choice, row)
            if len(ids) > max_tokens or (stop_id in ids and ids.index(stop_id) != len(ids) - 1):
                raise UserError(
                    f"vLLM server {self.url}: response {row} has {len(ids)} tokens (max_tokens={max_tokens}) "
                    f"or continues past the stop token {stop_id}"
                )
            samples.token_ids.append(ids)
            samples.logprobs.append(logprobs)
            samples.finished.append(bool(ids) and ids[-1] == stop_id)
        return samples

    def _complete(self, body: dict, expected: int) -> list[dict]:
        what = "generation (/v1/completions)"
        answer = self._call_json("POST", "/v1/completions", what, json=body)
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or len(choices) != expected:
            count = len(choices) if isinstance(choices, list) else "no"
            raise UserError(f"vLLM server {self.url}: {what} returned {count} choices, expected {expected}")
        return sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)

    def _tokens(self, choice: Any, row: int) -> tuple[list[int], list[float]]:
        """The generated token ids and their log-probs of one choice, checked."""
        bad = f"vLLM server {self.url}: response {row} of /v1/completions"
        try:
            logprobs = choice["logprobs"]["token_logprobs"]
            ids = choice.get("token_ids")
            if ids is None:  # a server without return_token_ids: the tokens are 'token_id:123'
                ids = [int(str(token).removeprefix("token_id:")) for token in choice["logprobs"]["tokens"]]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{bad} lacks token ids or log-probs: {str(choice)[:200]}") from None
        if not all(isinstance(i, int) and i >= 0 for i in ids):
            raise UserError(f"{bad} has token ids that are not non-negative integers: {str(ids)[:200]}")
        if len(logprobs) != len(ids):
            raise UserError(f"{bad} has {len(ids)} tokens but {len(logprobs)} log-probs")
        if not all(isinstance(x, int | float) and math.isfinite(x) and x <= 1e-4 for x in logprobs):
            raise UserError(f"{bad} has log-probs that are not finite numbers <= 0: {str(logprobs)[:200]}")
        return list(ids), [float(x) for x in logprobs]

    # ------------------------------------------------------------------ weight sync

    def reload_weights(self, directory: str, timeout: float = 600.0) -> None:
        """Make the server sample from the weights saved (`save_pretrained`) in `directory`, which the
        server must be able to read: pause, reload in place (``/collective_rpc reload_weights``), drop the
        prefix cache, resume. Resumes even when the reload fails, so a failed sync never leaves the
        server paused."""
        dev = {"hint": DEV_MODE_HINT}
        self._call("POST", "/pause", "pausing generation for a weight sync", params={"mode": "wait"}, **dev)
        try:
            rpc = {"method": "reload_weights", "kwargs": {"weights_path": directory}, "timeout": timeout}
            self._call("POST", "/collective_rpc", "reloading the weights", timeout=timeout, json=rpc, **dev)
            self._call("POST", "/reset_prefix_cache", "resetting the prefix cache", **dev)
        finally:
            self._call("POST", "/resume", "resuming generation after a weight sync", **dev)
        self.model = self.base_model

    def load_lora_adapter(self, name: str, directory: str, timeout: float = 600.0) -> None:
        """Load (or replace in place) the LoRA adapter saved in `directory` under `name`; later
        generations sample from the base model with this adapter."""
        body = {"lora_name": name, "lora_path": directory, "load_inplace": True}
        hint = "start the server with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 (docs/vllm.md)"
        self._call("POST", "/v1/load_lora_adapter", "loading the LoRA adapter", timeout=timeout, json=body,
                   hint=hint)  # fmt: skip
        self._call("POST", "/reset_prefix_cache", "resetting the prefix cache", hint=DEV_MODE_HINT)
        self.model = name


def engine_decode(
    client: VLLMClient,
    input_ids,
    attention_mask,
    max_new_tokens: int,
    stop_id: int,
    pad_id: int,
    repeats: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
):
    """`rlhf.rollout.decode`'s contract, sampled by the server: left-padded prompts input_ids,
    attention_mask (P, L), each continued `repeats` times (rows p * repeats ...). Returns the generated
    tokens (B, T) with `pad_id` after each row's stop token, as `decode` gives them, and the sampler's
    log-probs (B, T), 0 at padding; T is the longest response."""
    import torch

    prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)]
    samples = client.generate(prompts, repeats, max_new_tokens, stop_id, temperature, top_k, top_p, seed)
    width = max(1, max(map(len, samples.token_ids)))
    tokens = torch.full((len(samples.token_ids), width), pad_id, dtype=torch.long)
    logprobs = torch.zeros(len(samples.token_ids), width)
    for row, (ids, lps) in enumerate(zip(samples.token_ids, samples.logprobs, strict=True)):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        logprobs[row, : len(lps)] = torch.tensor(lps)
    return tokens.to(input_ids.device), logprobs.to(input_ids.device)


@dataclass
class RolloutEngine:
    """A trainer's vLLM server and how its weights follow the policy: after every update the policy is
    saved to `weights_dir` (readable by the server) and reloaded there, or, when only LoRA adapters
    train, the adapter alone is saved and loaded as `lora_name`."""

    client: VLLMClient
    weights_dir: Path
    lora: bool = False
    lora_name: str = "rlhf-policy"
    head_checked: bool = False  # whether the server is known to reload a tied LM head
    holds: Any = None  # a weak reference to the model last synced

    def serves(self, model) -> bool:
        """Whether the server holds `model`'s weights as they were last synced (not since updated)."""
        return self.holds is not None and self.holds() is model

    def sync(self, policy) -> float:
        """Make the server sample from `policy` (a transformers model, LoRA adapters injected by peft
        when `lora`); returns the seconds it took, saving included.

        Raises UserError when whole-weight reloads of a policy whose LM head is tied to its input
        embeddings would leave the server's head stale: vLLM (0.32 at least) reloads a tied head only
        when the server was started with `UNTIE_FLAG` (`save_for_reload` then writes the head)."""
        started = time.monotonic()
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        if self.lora:  # adapters never move the head
            save_lora_adapter(policy, self.weights_dir)
            self.client.load_lora_adapter(self.lora_name, str(self.weights_dir))
            self.holds = weakref.ref(policy)
            return time.monotonic() - started
        if not self.head_checked and tied_head_name(policy) is not None:
            if self.client.unties_head() is False:
                raise UserError(
                    f"vLLM server {self.client.url}: the policy's LM head is tied to its input embeddings, "
                    f"and vLLM reloads such a head only when the server is started with {UNTIE_FLAG} "
                    "(docs/vllm.md)"
                )
            self.head_checked = True
        self.holds = None  # a failed reload leaves the server holding neither
        save_for_reload(policy, self.weights_dir)
        self.client.reload_weights(str(self.weights_dir))
        self.holds = weakref.ref(policy)
        return time.monotonic() - started


def connect_engine(
    url: str, timeout: float, weights_dir: Path, lora: bool = False, option: str = "ppo.vllm_url"
) -> RolloutEngine:
    """The vLLM server at `url` as a rollout engine, checked (health, served model) before any work;
    `weights_dir`: where synced weights are saved for it (it must be able to read them); `lora`: only
    adapters are synced; `option`: the setting that named `url`. Raises UserError when unreachable."""
    client = VLLMClient(url, timeout=timeout, option=option)
    client.health()
    client.served_model()
    return RolloutEngine(client, Path(weights_dir).expanduser().resolve(), lora=lora)


def tied_head_name(model) -> str | None:
    """The state-dict name of `model`'s output embedding weight when it is the input embedding's tensor
    (tied word embeddings), else None."""
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embeddings is None or head.weight is not embeddings.weight:
        return None
    return next(f"{name}.weight" for name, module in model.named_modules() if module is head)


def save_for_reload(model, directory: Path, **save_kwargs: Any) -> None:
    """`model.save_pretrained(directory, **save_kwargs)`, with a tied LM head written out as its own tensor and the
    saved config untied, so that a server started with `UNTIE_FLAG` reloads the head with the
    embeddings (transformers loads the directory as the same model, untied)."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(directory, **save_kwargs)
    name = tied_head_name(model)
    if name is None:
        return
    head = model.get_output_embeddings().weight.detach().cpu().contiguous().clone()
    index = directory / "model.safetensors.index.json"
    if index.is_file():  # sharded: the head as one more shard, named in the index
        save_file({name: head}, str(directory / "model-lm-head.safetensors"), metadata={"format": "pt"})
        table = json.loads(index.read_text())
        table["weight_map"][name] = "model-lm-head.safetensors"
        index.write_text(json.dumps(table, indent=2))
    else:  # one file: the head goes into it (transformers reads a model.safetensors before any index)
        path = directory / "model.safetensors"
        save_file({**load_file(str(path)), name: head}, str(path), metadata={"format": "pt"})
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["tie_word_embeddings"] = False
    for value in config.values():  # a composite model's text config ties too
        if isinstance(value, dict) and "tie_word_embeddings" in value:
            value["tie_word_embeddings"] = False
    config_path.write_text(json.dumps(config, indent=2))


def save_lora_adapter(model, directory: Path) -> None:
    """The LoRA adapters injected into `model` (`rlhf.models.add_lora`) as a peft adapter directory
    (adapter_config.json, adapter_model.safetensors with peft's `base_model.model.` names), the layout
    vLLM's and peft's loaders read."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = model.peft_config["default"]
    state = get_peft_model_state_dict(model)
    save_file({f"base_model.model.{k}": v.detach().contiguous().cpu() for k, v in state.items()},
              str(directory / "adapter_model.safetensors"))  # fmt: skip
    config.save_pretrained(str(directory))
