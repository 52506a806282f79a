"""TorchServe's other entry points: explanations and customized describe get a 400 JSON answer.

``BaseHandler`` sends ``POST /explanations/<model>`` to Captum's ``get_insights``, which this model
does not have: the worker raised ``AttributeError`` and TorchServe answered 503 "Prediction failed".
The handler now answers such a request like any other it cannot serve, for that request only.
"""

from __future__ import annotations

import requests

from handler.person_handler import PersonSegmenterHandler
from tests.handler import images
from tests.handler.fakes import raw, run
from tests.handler.served import as_image, post, worker_pids

PNG = images.encode(images.subject_photo())


def test_an_explanation_request_fails_alone_in_its_batch(handler: PersonSegmenterHandler) -> None:
    """In-process, with TorchServe's per-request marker headers: only the marked requests fail."""
    answers = run(handler, [raw(PNG), raw(PNG), raw(PNG)], [{"explain": "True"}, {}, {"describe": "True"}])
    assert answers[0].status == 400 and "explanations are not supported" in answers[0].error()
    assert answers[1].status == 200 and answers[1].image().size == images.SUBJECT_SIZE
    assert answers[2].status == 400 and "not supported" in answers[2].error()


def _assert_not_supported(r: requests.Response) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json")
    assert "not supported by this model" in r.text


def test_served_explanations_and_describe_get_400_and_the_worker_stays(torchserve_server) -> None:
    """Against the real TorchServe: every route that reaches the handler's explain/describe branch."""
    server = torchserve_server
    before = worker_pids(server)
    auth = server.auth()
    explain = f"{server.inference_url}/explanations/{server.model_name}"
    _assert_not_supported(requests.post(explain, data=PNG, headers={**auth, "Content-Type": "image/png"},
                                         timeout=120))
    _assert_not_supported(requests.post(explain, files={"image": PNG}, headers=auth, timeout=120))
    _assert_not_supported(requests.post(f"{server.inference_url}/v1/models/{server.model_name}:explain",
                                        json={"instances": []}, headers=auth, timeout=120))
    r = requests.get(f"{server.management_url}/models/{server.model_name}", params={"customized": "true"},
                     headers=server.auth("management"), timeout=120)
    assert r.status_code == 400, r.text[:300]
    assert "not supported" in r.json()[0]["customizedMetadata"]["error"]
    assert worker_pids(server) == before  # nothing raised in the worker: no restart
    assert as_image(post(server, PNG)).size == images.SUBJECT_SIZE
    log = (server.log_dir / "model_log.log").read_text(errors="replace")
    assert "get_insights" not in log and "AttributeError" not in log
