"""Credentials are masked in everything aikd records: URIs, secret-named fields, the environment's keys."""

from aikd.redact import MASK, redact, redact_text

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY"


def test_user_info_in_a_uri_is_masked():
    assert redact_text("http://aikd:hunter22@tracking:5000/") == f"http://{MASK}@tracking:5000/"
    assert redact_text(f"s3://AKIAPLANTED0000000:{SECRET}@bucket/faces") == f"s3://{MASK}@bucket/faces"


def test_secret_named_query_values_are_masked_and_others_kept():
    text = redact_text("s3://bucket/x?region=eu-west-1&secret_key=abc123456&access_key=AKIA")
    assert text == f"s3://bucket/x?region=eu-west-1&secret_key={MASK}&access_key={MASK}"


def test_the_environments_credentials_are_masked_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert redact_text(f"note: key {SECRET} pasted") == f"note: key {MASK} pasted"


def test_short_environment_values_are_not_treated_as_secrets(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # a local test server's placeholder
    assert redact_text("tests/testing/faces") == "tests/testing/faces"


def test_nested_values_and_secret_named_fields():
    spec = {"options": {"model": "runs/fr", "api_token": "tok-123456789"}, "shards": ["http://u:p@h/x"], "n": 3}
    assert redact(spec) == {"options": {"model": "runs/fr", "api_token": MASK}, "shards": [f"http://{MASK}@h/x"],
                            "n": 3}


def test_an_at_sign_in_a_path_is_not_user_info():
    assert redact_text("s3://bucket/faces/jane@home.jpg") == "s3://bucket/faces/jane@home.jpg"
