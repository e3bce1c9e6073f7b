from conftest import get


def test_control_listener_answers(corral):
    assert get(corral.url + "/health") == (200, "ok\n")
    status, body = get(corral.url + "/")
    assert status == 200 and "generation" in body
