"""Calls to a Gradio server over plain HTTP, as a script would send them (NaN included)."""

import json

import httpx


def upload(base_url: str, path, name: str | None = None) -> dict:
    with open(path, "rb") as file:
        response = httpx.post(f"{base_url}/gradio_api/upload", files={"files": (name or str(path).rsplit("/", 1)[-1], file)}, timeout=60)
    response.raise_for_status()
    return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}


def arguments(base_url: str, api_name: str, **values) -> list:
    """The endpoint's arguments in its order: `values` by name, the server's defaults for the rest."""
    parameters = httpx.get(f"{base_url}/gradio_api/info", timeout=30).json()["named_endpoints"][f"/{api_name}"]["parameters"]
    unknown = set(values) - {parameter["parameter_name"] for parameter in parameters}
    assert not unknown, f"/{api_name} has no parameters {unknown}"
    return [values.get(parameter["parameter_name"], parameter["parameter_default"]) for parameter in parameters]


def call(base_url: str, api_name: str, data: list, timeout: float = 120) -> tuple[str, object]:
    """POST the event, then read its stream: ("complete", outputs) or ("error", message)."""
    body = json.dumps({"data": data})  # allow_nan: NaN and Infinity go out as a careless client sends them
    response = httpx.post(f"{base_url}/gradio_api/call/{api_name}", content=body,
                          headers={"content-type": "application/json"}, timeout=timeout)
    if response.status_code != 200:
        return "http", (response.status_code, response.text)
    event_id = response.json()["event_id"]
    event = None
    with httpx.stream("GET", f"{base_url}/gradio_api/call/{api_name}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = line.split(":", 1)[1].strip()
                return event, json.loads(payload) if payload not in ("", "null") else None  # error: {"error": message, ...}
    return "closed", None
