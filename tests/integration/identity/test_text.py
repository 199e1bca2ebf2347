"""Text cut into error messages stays valid UTF-8: a 400 answers with a
JSON body that decodes, never a 500 because a character was split."""
import json
import uuid


def strict_json(r):
    """The body as JSON, refusing anything that is not valid UTF-8."""
    return json.loads(r.content.decode("utf-8", errors="strict"))


def assignment(**over):
    body = {"principal": {"type": "user", "id": str(uuid.uuid4())},
            "role_id": str(uuid.uuid4()), "region": "us", "resource": "doc/1"}
    body.update(over)
    return body


def test_unknown_region_of_multibyte_characters(admin):
    # The message quotes the region cut to 40 bytes: 'a' + 19.5 'é' by bytes.
    region = "a" + "é" * 20
    r = admin.post("/v1/role-assignments", assignment(region=region))
    assert r.status_code == 400, r.text
    err = strict_json(r)["error"]
    assert err["code"] == "invalid_field" and err["field"] == "region"
    quoted = err["message"].split('"')[1]
    assert region.startswith(quoted) and len(quoted.encode()) == 39, err


def test_unknown_member_of_300_e_acute(admin):
    name = "é" * 300
    body = assignment()
    body[name] = 1
    r = admin.post("/v1/role-assignments", body)
    assert r.status_code == 400, r.text
    err = strict_json(r)["error"]
    assert err["code"] == "invalid_field" and err["field"] == name
    assert err["message"].startswith('unknown field "éé'), err
    assert len(err["message"].encode()) <= 511
