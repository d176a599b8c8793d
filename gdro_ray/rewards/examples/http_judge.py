r"""A reward from a served judge: ``reward.function=gdro_ray.rewards.examples.http_judge:judge_reward``.

The judge is any HTTP endpoint (a vLLM server with a grading prompt behind a small adapter, a
rubric service, a reward model): this function sends it one JSON request per prompt with the
prompt's n responses, and takes back one score each. The request and the answer:

    POST $GDRO_JUDGE_URL   {"prompt": "...", "answer": "...", "responses": ["...", ...]}
                        →  {"scores": [1.0, 0.0, ...]}

Set ``GDRO_JUDGE_URL`` where the samplers run (the Ray job's environment: ``runtime_env`` or the
node's). A served judge is slower than math-verify: give the call its own limit,
``reward.timeout_s`` (one prompt's request), and keep ``reward.on_error=zero`` so a judge that
is down scores those rollouts 0 and counts them (``reward_errors``), or ``stop`` to end the run.
It runs as an ``async def``: the sampler's reward worker awaits it. ``reward.concurrency=K`` lets a
sampler keep K such requests in flight (each call in its own worker).
"""
from __future__ import annotations

import asyncio
import json
import os
import urllib.request

URL_ENV = "GDRO_JUDGE_URL"
REQUEST_TIMEOUT_S = 60.0  # the HTTP client's own limit; reward.timeout_s bounds the whole call


def _post(url: str, body: dict, timeout_s: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read().decode())


async def judge_reward(prompts, responses, answers, metadata) -> list[float]:
    url = os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(f"set {URL_ENV} to the judge's URL")
    body = {"prompt": prompts[0] if prompts else "", "answer": answers[0] if answers else "",
            "responses": list(responses)}
    reply = await asyncio.to_thread(_post, url, body, REQUEST_TIMEOUT_S)
    scores = reply.get("scores")
    if not isinstance(scores, list) or len(scores) != len(responses):
        raise ValueError(f"the judge answered {str(reply)[:200]}, expected {{'scores': [{len(responses)} numbers]}}")
    return [float(s) for s in scores]
