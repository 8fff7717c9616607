"""A loopback stand-in for `vllm serve`: the routes `rlhf.vllm_client` uses, sampling in-process from a
transformers model with rlhf's own decoding loop, so a test's "engine" samples from the same policy.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions`` (token-id prompts, ``n``, ``seed``,
``logprobs`` of the sampled tokens after temperature / top-k / top-p, like vLLM's
``--logprobs-mode processed_logprobs``), and weight sync as vLLM's dev mode serves it: ``/pause``,
``/resume``, ``/reset_prefix_cache``, ``/collective_rpc`` (``reload_weights`` from ``weights_path``) and
``/v1/load_lora_adapter`` (peft), ``/server_info`` (its ``hf_overrides``). A reload treats a tied LM head
as vLLM 0.32 does: it stays stale unless the server unties it (``untie_head``, default on) and the
checkpoint holds the head. `Faults` switches make it hang, answer garbage or refuse routes; stopping it
is the dead server.

A request with seed s samples like `rlhf.rollout.decode` after ``torch.manual_seed(s)`` (in a forked RNG:
the caller's random stream is untouched), so its tokens can be compared with our own sampler's.

    with standin_server(model_dir) as (url, app): ...      # in a test (uvicorn in a thread)
    python -m tests.vllm_standin MODEL_DIR --port 8000     # as a process
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


@dataclass
class Faults:
    """What the stand-in does wrong, switchable while it runs."""

    hang_seconds: float = 0.0  # every route sleeps this long before answering
    trickle: bool = False  # /v1/completions answers 200, then one byte every 0.2 s, without end
    garbage: str = ""  # "" | "not_json" | "few_choices" | "nan_logprobs" | "short_logprobs"
    dev_routes: bool = True  # False: the weight-sync routes answer 404, as without VLLM_SERVER_DEV_MODE=1
    logprob_offset: float = 0.0  # subtracted from every reported log-prob: a sampler that disagrees
    calls: list[str] = field(default_factory=list)  # each route called, in order


class StandIn:
    """The served model (and its LoRA variants) behind one lock: requests are answered one at a time."""

    def __init__(self, model_dir: str, name: str, untie_head: bool = True) -> None:
        self.name, self.lock = name, threading.Lock()
        self.models: dict[str, Any] = {name: self._load(model_dir)}
        self.paused = False
        self.untie_head = untie_head  # started with --hf-overrides '{"tie_word_embeddings": false}'
        self.tied = bool(self.models[name].config.tie_word_embeddings)

    @staticmethod
    def _load(path: str):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def reload(self, path: str) -> None:
        """As vLLM 0.32 reloads in place: a tied model's head keeps its old values unless the server
        unties it and the checkpoint holds the head (untied config, the head as its own tensor)."""
        old_head = self.models[self.name].get_output_embeddings().weight.detach().clone()
        model = self._load(path)
        if self.tied and (not self.untie_head or model.config.tie_word_embeddings):
            model.get_output_embeddings().weight = torch.nn.Parameter(old_head)  # unties: a stale head
        self.models = {self.name: model}  # adapters were on the old weights: dropped

    def load_lora(self, name: str, path: str) -> None:
        import copy

        from peft import PeftModel

        base = copy.deepcopy(self.models[self.name])
        self.models[name] = PeftModel.from_pretrained(base, path).merge_and_unload().eval()

    @torch.no_grad()
    def complete(self, body: dict) -> list[dict]:
        from rlhf.rollout import decode, filtered_scores

        model = self.models.get(body.get("model") or self.name)
        if model is None:
            raise HTTPException(404, f"The model `{body.get('model')}` does not exist.")
        prompts = body["prompt"]
        prompts = [prompts] if prompts and isinstance(prompts[0], int) else prompts
        n, max_tokens = int(body.get("n", 1)), int(body.get("max_tokens", 16))
        temperature = float(body.get("temperature", 1.0))
        top_k, top_p = max(int(body.get("top_k") or 0), 0), float(body.get("top_p") or 1.0)
        stops = set(body.get("stop_token_ids") or [])
        if not body.get("ignore_eos"):
            stops.add(model.config.eos_token_id)
        stop_id = min(stops)  # `decode` stops at one id; the client always sends exactly one
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else stop_id

        def choose(logits, _):
            if temperature <= 0:  # greedy: vLLM reports the unscaled log-probs
                token = logits.argmax(dim=-1)
                return token, torch.log_softmax(logits.float(), -1).gather(1, token[:, None])[:, 0]
            from rlhf.rollout import sample_next

            token = sample_next(logits, temperature, top_k, top_p)
            scores = filtered_scores(logits, temperature, top_k, top_p).log_softmax(-1)
            return token, scores.gather(1, token[:, None])[:, 0]

        choices = []
        for index, prompt in enumerate(prompts):
            seed = body.get("seed")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) + index * n if seed is not None else int(time.time_ns() % 2**31))
                rows = self._decode_with_logprobs(
                    model, prompt, n, max_tokens, choose, stop_id, pad_id, decode
                )
            for ids, lps in rows:
                finished = bool(ids) and ids[-1] == stop_id
                choices.append(
                    {
                        "index": len(choices),
                        "text": "",
                        "token_ids": ids if body.get("return_token_ids") else None,
                        "logprobs": {
                            "tokens": [f"token_id:{i}" for i in ids],
                            "token_logprobs": lps,
                            "top_logprobs": None,
                            "text_offset": [],
                        },
                        "finish_reason": "stop" if finished else "length",
                        "stop_reason": stop_id if finished else None,
                    }
                )
        return choices

    @staticmethod
    def _decode_with_logprobs(model, prompt, n, max_tokens, choose, stop_id, pad_id, decode):
        """One prompt's n samples through `rlhf.rollout.decode`; each token's log-prob recorded per step."""
        steps: list[torch.Tensor] = []

        def recording(logits, hidden):
            token, logprob = choose(logits, hidden)
            steps.append(logprob)
            return token, None

        ids = torch.tensor([prompt])
        tokens, _ = decode(
            model, ids, torch.ones_like(ids), max_tokens, recording, stop_id, pad_id, repeats=n
        )
        logprobs = torch.stack(steps, dim=1)  # (n, T)
        rows = []
        for row, lps in zip(tokens.tolist(), logprobs.tolist(), strict=True):
            length = row.index(stop_id) + 1 if stop_id in row else len(row)
            rows.append((row[:length], lps[:length]))
        return rows


def create_app(
    model_dir: str, name: str = "standin", faults: Faults | None = None, untie_head: bool = True
) -> FastAPI:
    """The stand-in's FastAPI app; `app.state.faults` switches its faults, `app.state.engine` its model.
    `untie_head`: as if started with ``--hf-overrides '{"tie_word_embeddings": false}'``."""
    app = FastAPI()
    app.state.faults = faults or Faults()
    app.state.engine = StandIn(str(model_dir), name, untie_head)

    @app.middleware("http")
    async def faulty(request: Request, call_next):
        f: Faults = app.state.faults
        f.calls.append(request.url.path)
        if f.hang_seconds:
            await asyncio.sleep(f.hang_seconds)
        dev = {"/pause", "/resume", "/reset_prefix_cache", "/collective_rpc", "/v1/load_lora_adapter",
               "/server_info"}  # fmt: skip
        if request.url.path in dev and not f.dev_routes:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return await call_next(request)

    @app.get("/health")
    def health() -> Response:
        return Response(status_code=200)

    @app.get("/server_info")
    def server_info() -> dict:
        overrides = {"tie_word_embeddings": False} if app.state.engine.untie_head else {}
        return {"vllm_config": {"model_config": {"hf_overrides": overrides}}}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in app.state.engine.models]}

    @app.post("/v1/completions")
    def completions(body: dict) -> Response:
        engine: StandIn = app.state.engine
        garbage = app.state.faults.garbage
        if garbage == "not_json":
            return PlainTextResponse("<html>502 Bad Gateway</html>")
        if app.state.faults.trickle:

            async def drip():
                while True:
                    yield b" "
                    await asyncio.sleep(0.2)

            return StreamingResponse(drip(), media_type="application/json")
        with engine.lock:
            if engine.paused:
                raise HTTPException(503, "generation is paused")
            choices = engine.complete(body)
        for choice in choices:
            lps = choice["logprobs"]["token_logprobs"]
            choice["logprobs"]["token_logprobs"] = [lp - app.state.faults.logprob_offset for lp in lps]
        if garbage == "few_choices":
            choices = choices[:-1]
        elif garbage == "nan_logprobs":
            choices[0]["logprobs"]["token_logprobs"][0] = float("nan")
        elif garbage == "short_logprobs":
            choices[0]["logprobs"]["token_logprobs"] = choices[0]["logprobs"]["token_logprobs"][:-1]
        answer = {"object": "text_completion", "model": body.get("model"), "choices": choices}
        # json.dumps writes NaN as the bare NaN that Python's parser (and a broken server) would send
        return Response(json.dumps(answer), media_type="application/json")

    @app.post("/pause")
    def pause() -> dict:
        app.state.engine.paused = True
        return {"status": "paused"}

    @app.post("/resume")
    def resume() -> dict:
        app.state.engine.paused = False
        return {"status": "resumed"}

    @app.post("/reset_prefix_cache")
    def reset_prefix_cache() -> dict:
        return {"success": True}

    @app.post("/collective_rpc")
    def collective_rpc(body: dict) -> dict:
        if body.get("method") != "reload_weights":
            raise HTTPException(400, f"the stand-in runs only reload_weights, not {body.get('method')!r}")
        with app.state.engine.lock:
            try:
                app.state.engine.reload(body.get("kwargs", {})["weights_path"])
            except (OSError, KeyError, ValueError) as err:  # vLLM answers 500 with the worker's error
                raise HTTPException(500, f"reload_weights failed: {err}") from None
        return {"results": [None]}

    @app.post("/v1/load_lora_adapter")
    def load_lora_adapter(body: dict) -> Response:
        with app.state.engine.lock:
            app.state.engine.load_lora(body["lora_name"], body["lora_path"])
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def standin_server(model_dir, name: str = "standin", faults: Faults | None = None, untie_head: bool = True):
    """Serve the stand-in on a free loopback port in a background thread: yields (url, app); stopped
    (connections refused from then on) when the block ends, or earlier by `stop()` on the yielded app."""
    import uvicorn

    app = create_app(str(model_dir), name, faults, untie_head)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    app.state.stop = stop
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the vLLM stand-in did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        stop()


if __name__ == "__main__":
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--name", default="standin")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--tied-head", action="store_true", help="serve without untying a tied LM head")
    args = parser.parse_args()
    app = create_app(args.model_dir, args.name, untie_head=not args.tied_head)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
