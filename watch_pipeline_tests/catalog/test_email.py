"""Email configurations and source links at the service layer (the CLI is only one caller)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.crud import NotFoundError
from watch_pipeline.catalog.email import (
    create_email_config,
    delete_email_config,
    email_config_secret,
    email_config_to_dict,
    find_email_config,
    link_source,
    links_for_config,
    links_for_source,
    list_email_configs,
    record_send_failure,
    record_send_success,
    record_test_result,
    unlink_source,
    update_email_config,
)
from watch_pipeline.catalog.models import EmailNotificationConfig, WatchSource, WatchSourceEmail
from watch_pipeline.catalog.secrets import SecretDecryptError
from watch_pipeline.catalog.sources import create_source, delete_source
from watch_pipeline.catalog.validation import ValidationError

SMTP = {"name": "relay", "provider": "smtp", "from_address": "watch@example.test",
        "default_recipients": ["ops@example.test"], "smtp_host": "mail.example.test"}
EXCHANGE = {"name": "exchange", "provider": "exchange", "from_address": "watch@corp.test",
            "exchange_server": "exch.corp.test", "exchange_username": "svc",
            "exchange_domain": "CORP"}
M365 = {"name": "m365", "provider": "m365", "from_address": "alerts@contoso.test",
        "m365_tenant_id": "contoso.onmicrosoft.com",
        "m365_client_id": "11111111-2222-3333-4444-555555555555"}
PASSWORD = "relay-Pa55word-secret"


def _create(catalog, box=None, secret=None, base=SMTP, **fields):
    with catalog.session() as s:
        return email_config_to_dict(create_email_config(s, box, fields={**base, **fields},
                                                        secret=secret))


def _source(catalog, name="cams"):
    with catalog.session() as s:
        return create_source(s, None, fields={"name": name, "source_type": "local",
                                              "local_path": name}).id


@pytest.mark.parametrize(("base", "fields", "field", "rule"), [
    (SMTP, {"name": ""}, "name", "1-200"),
    (SMTP, {"name": "x" * 201}, "name", "1-200"),
    (SMTP, {"provider": "sendgrid"}, "provider", "one of smtp, exchange, m365"),
    (SMTP, {"from_address": "nobody"}, "from_address", "not an email address"),
    (SMTP, {"from_address": None}, "from_address", "required"),
    (SMTP, {"default_recipients": ["ok@example.test", "bad@"]}, "default_recipients",
     "'bad@' is not an email address"),
    (SMTP, {"smtp_host": None}, "smtp_host", "required"),
    (SMTP, {"smtp_host": "smtp://x"}, "smtp_host", "host name"),
    (SMTP, {"smtp_port": 0}, "smtp_port", "between 1 and 65535"),
    (SMTP, {"smtp_port": 65536}, "smtp_port", "between 1 and 65535"),
    (SMTP, {"smtp_username": "bob"}, "password", "required when a username"),
    (SMTP, {"exchange_server": "x"}, "exchange_server", "only applies to exchange"),
    (SMTP, {"m365_tenant_id": "x"}, "m365_tenant_id", "only applies to m365"),
    (SMTP, {"bogus": 1}, "bogus", "not an email configuration field"),
    (EXCHANGE, {"exchange_server": ""}, "exchange_server", "required"),
    (EXCHANGE, {"exchange_username": None}, "exchange_domain", "needs exchange_username"),
    (EXCHANGE, {"smtp_use_tls": False}, "smtp_use_tls", "only applies to smtp"),
    (M365, {"m365_tenant_id": None}, "m365_tenant_id", "required"),
    (M365, {"m365_client_id": "has space"}, "m365_client_id", "GUID"),
    (M365, {}, "client-secret", "required for m365"),
])
def test_rules(sqlite_catalog, box, base, fields, field, rule):
    secret = PASSWORD if base is EXCHANGE else None
    with pytest.raises(ValidationError) as info:
        _create(sqlite_catalog, box, secret, base=base, **fields)
    assert info.value.field == field
    assert rule in info.value.rule


def test_defaults_and_normalisation(sqlite_catalog):
    data = _create(sqlite_catalog, name="  relay ", default_recipients=(
        "ops@example.test, OPS@example.test; boss@example.test"), smtp_username="  ")
    assert data["name"] == "relay" and data["provider"] == "smtp"
    assert data["default_recipients"] == ["ops@example.test", "boss@example.test"]
    assert data["smtp_port"] == 587 and data["smtp_use_tls"] is True
    assert data["smtp_insecure_skip_verify"] is False and data["smtp_username"] is None
    assert data["is_enabled"] is True and data["has_secret"] is False
    assert data["send_failures"] == 0 and data["last_send_error"] is None
    assert data["test_status"] is None
    assert not any(k.startswith("encrypted_") for k in data)


def test_unique_name_and_immutable_provider(sqlite_catalog):
    _create(sqlite_catalog)
    with pytest.raises(ValidationError, match="unique"):
        _create(sqlite_catalog)
    with sqlite_catalog.session() as s, pytest.raises(ValidationError) as info:
        update_email_config(s, None, find_email_config(s, "relay"), fields={"provider": "m365"})
    assert info.value.field == "provider" and "cannot be changed" in info.value.rule


def test_secret_is_encrypted_bound_to_its_row(sqlite_catalog, box):
    first = _create(sqlite_catalog, box, PASSWORD, smtp_username="bob")
    _create(sqlite_catalog, box, "other-secret", name="relay2", smtp_username="amy")
    assert first["has_secret"] is True
    with sqlite_catalog.session() as s:
        one = find_email_config(s, first["id"])
        two = find_email_config(s, "relay2")
        assert PASSWORD not in one.encrypted_smtp_password
        assert email_config_secret(box, one) == PASSWORD
        assert email_config_secret(box, two) == "other-secret"
        two.encrypted_smtp_password = one.encrypted_smtp_password  # copied to another row
        with pytest.raises(SecretDecryptError):
            email_config_secret(box, two)
        s.rollback()


@pytest.mark.parametrize(("base", "column"), [
    (EXCHANGE, "encrypted_exchange_password"), (M365, "encrypted_m365_client_secret")])
def test_secret_column_per_provider(sqlite_catalog, box, base, column):
    data = _create(sqlite_catalog, box, "s3cr3t-value", base=base)
    assert data["has_secret"] is True
    with sqlite_catalog.session() as s:
        row = find_email_config(s, data["id"])
        assert getattr(row, column) and email_config_secret(box, row) == "s3cr3t-value"
        others = {"encrypted_smtp_password", "encrypted_exchange_password",
                  "encrypted_m365_client_secret"} - {column}
        assert all(getattr(row, c) is None for c in others)


def test_update(sqlite_catalog, box):
    _create(sqlite_catalog)
    with sqlite_catalog.session() as s:
        row = find_email_config(s, "relay")
        update_email_config(s, box, row, fields={"smtp_port": 465, "is_enabled": False,
                                                 "smtp_username": "bob"}, secret="pw-1")
    with sqlite_catalog.session() as s:
        row = find_email_config(s, "relay")
        assert (row.smtp_port, row.is_enabled, row.smtp_username) == (465, False, "bob")
        assert email_config_secret(box, row) == "pw-1"
        # the stored password satisfies the username rule on later updates
        update_email_config(s, None, row, fields={"smtp_host": "other.example.test"})
        with pytest.raises(ValidationError, match="required when a username"):
            update_email_config(s, None, row, fields={}, secret="")


def test_find_list_and_missing(sqlite_catalog, box):
    _create(sqlite_catalog)
    _create(sqlite_catalog, box, "x", base=M365)
    with sqlite_catalog.session() as s:
        assert [c.name for c in list_email_configs(s)] == ["relay", "m365"]
        assert find_email_config(s, "2").name == "m365"
        update_email_config(s, None, find_email_config(s, "relay"), fields={"is_enabled": False})
        assert [c.name for c in list_email_configs(s, enabled_only=True)] == ["m365"]
        with pytest.raises(NotFoundError, match="no email configuration"):
            find_email_config(s, "ghost")


def test_link_upsert_unlink_and_cascades(any_catalog):
    config_id = _create(any_catalog)["id"]
    cams, other = _source(any_catalog, "cams"), _source(any_catalog, "other")
    with any_catalog.session() as s:
        config = find_email_config(s, config_id)
        link_source(s, config, s.get(WatchSource, cams),
                    additional_recipients="a@example.test, A@example.test")
        link_source(s, config, s.get(WatchSource, cams),
                    additional_recipients=["b@example.test"],
                    notify_on_success=False)  # replaces the first link's settings
        link_source(s, config, s.get(WatchSource, other))
    with any_catalog.session() as s:
        [link] = links_for_source(s, cams)
        assert link.additional_recipients == ["b@example.test"]
        assert (link.notify_on_success, link.notify_on_error) == (False, True)
        assert link.email_config.name == "relay"
        assert len(links_for_config(s, config_id)) == 2
        assert s.scalar(sa.select(sa.func.count()).select_from(WatchSourceEmail)) == 2
        with pytest.raises(ValidationError) as info:
            link_source(s, link.email_config, link.source, additional_recipients="nope")
        assert info.value.field == "additional_recipients"
    with any_catalog.session() as s:
        config = find_email_config(s, config_id)
        unlink_source(s, config, s.get(WatchSource, cams))
        with pytest.raises(NotFoundError, match="not linked"):
            unlink_source(s, config, s.get(WatchSource, cams))
    with any_catalog.session() as s:
        delete_source(s, s.get(WatchSource, other))  # the link goes with the source
        assert links_for_config(s, config_id) == []
        link_source(s, find_email_config(s, config_id), s.get(WatchSource, cams))
        assert delete_email_config(s, find_email_config(s, config_id)) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(WatchSourceEmail)) == 0


def test_test_results_and_send_failures_are_recorded(any_catalog):
    config_id = _create(any_catalog)["id"]
    with any_catalog.session() as s:
        record_test_result(s, find_email_config(s, config_id), True, "test message sent")
    with any_catalog.session() as s:
        data = email_config_to_dict(find_email_config(s, config_id))
        assert data["test_status"] == "ok" and data["test_message"] == "test message sent"
        assert data["last_tested_at"] is not None
    for reason in ("cannot reach SMTP server a:1: refused", "x" * 5000):
        with any_catalog.session() as s:
            record_send_failure(s, find_email_config(s, config_id), reason)
    with any_catalog.session() as s:
        row = find_email_config(s, config_id)
        assert row.send_failures == 2 and row.test_status == "error"
        assert len(row.last_send_error) == 2000 and row.test_message == row.last_send_error
        record_send_success(s, row, "summary sent to ops@example.test")
    with any_catalog.session() as s:
        row = find_email_config(s, config_id)
        assert row.test_status == "ok" and row.send_failures == 2


def test_model_has_the_new_columns():
    columns = EmailNotificationConfig.__table__.columns
    assert columns["send_failures"].server_default is not None
    assert "last_send_error" in columns and "smtp_insecure_skip_verify" in columns
