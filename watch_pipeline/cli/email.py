"""``watch-pipeline email ...``: add, list, show, update, remove, test, link, unlink.

Secrets (the SMTP/Exchange password, the Microsoft 365 client secret) are read from stdin or a
hidden prompt, never from arguments, and are never printed. ``email test`` reads three optional
environment variables at command time:

* ``WATCH_GRAPH_BASE_URL`` — Microsoft Graph root (default ``https://graph.microsoft.com/v1.0``);
* ``WATCH_M365_AUTHORITY_BASE_URL`` — Microsoft 365 login root (default
  ``https://login.microsoftonline.com``); MSAL accepts only ``https`` here, so a stand-in server
  needs a certificate the process trusts (``REQUESTS_CA_BUNDLE`` names extra CAs for both URLs);
* ``WATCH_SMTP_CA_FILE`` — a PEM file of extra CAs trusted for SMTP/Exchange TLS (an internal
  CA, or a test server's self-signed certificate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from watch_pipeline.catalog import email as svc
from watch_pipeline.catalog.models import EmailProvider
from watch_pipeline.catalog.sources import find_source
from watch_pipeline.catalog.validation import ValidationError, recipients
from watch_pipeline.cli.context import (
    CliContext,
    Column,
    FieldOptions,
    emit_json,
    fail,
    field_option,
    for_kind,
    pass_cli,
    print_fields,
    print_table,
    read_secret,
)
from watch_pipeline.mail.base import EmailMessage, MailError
from watch_pipeline.mail.connect import MailSettings, mailer_for_config
from watch_pipeline.mail.graph import DEFAULT_AUTHORITY_BASE, DEFAULT_GRAPH_BASE
from watch_pipeline.mail.render import render_test_message

PROVIDERS = [p.value for p in EmailProvider]

_OPTIONS = FieldOptions([
    field_option("--name", "name", "Unique display name (1-200 characters)."),
    field_option("--provider", "provider", "Delivery provider (fixed at creation).",
                 type=click.Choice(PROVIDERS)),
    field_option("--from from_address", "from_address", "Sender address.", metavar="ADDR"),
    field_option("--recipients default_recipients", "default_recipients",
                 "Comma-separated default recipients.", metavar="A,B"),
    field_option("--enabled/--disabled", "is_enabled",
                 "Send notifications with this configuration (default on)."),
    *for_kind("smtp", [
        field_option("--host", "smtp_host", "server host name or address."),
    ]),
    *for_kind("smtp/exchange", [
        field_option("--port", "smtp_port", "port (default 587; 465 = implicit TLS).", type=int),
    ]),
    *for_kind("smtp", [
        field_option("--tls/--no-tls", "smtp_use_tls",
                     "STARTTLS on ports other than 465 (default on)."),
        field_option("--insecure-skip-verify/--verify-certificate", "smtp_insecure_skip_verify",
                     "accept any server certificate (off unless you set it)."),
        field_option("--allow-insecure-auth/--no-allow-insecure-auth", "smtp_allow_insecure_auth",
                     "send the login over a connection without TLS (--no-tls); off unless you "
                     "set it, only for a trusted local relay."),
    ]),
    *for_kind("exchange", [
        field_option("--server", "exchange_server", "server host name or address."),
        field_option("--domain", "exchange_domain", "Windows domain (login DOMAIN\\user)."),
    ]),
    *for_kind("m365", [
        field_option("--tenant-id", "m365_tenant_id", "Entra tenant id or domain."),
        field_option("--client-id", "m365_client_id", "app registration client id."),
    ]),
])
_USERNAME_COLUMN = {EmailProvider.SMTP: "smtp_username",
                    EmailProvider.EXCHANGE: "exchange_username"}


def email_options(func: Any) -> Any:
    """Attach every configuration option, ``--username`` and the secret-from-stdin flags."""
    func = click.option("--client-secret-stdin", is_flag=True,
                        help="m365: read the client secret from stdin.")(func)
    func = click.option("--password-stdin", is_flag=True,
                        help="smtp/exchange: read the password from stdin.")(func)
    func = click.option("--username", help="smtp/exchange: login user.")(func)
    return _OPTIONS.attach(func)


def _fields(params: dict[str, Any], provider: str | None) -> dict[str, Any]:
    fields = _OPTIONS.given(params)
    if params.get("username") is not None:
        column = _USERNAME_COLUMN.get(provider or "")
        if column is None:
            raise ValidationError("username", "only applies to smtp and exchange configurations")
        fields[column] = params["username"]
    return fields


def _secret(params: dict[str, Any], provider: str, *, required: bool) -> str | None:
    if provider == EmailProvider.M365:
        if params.get("password_stdin"):
            raise ValidationError("password", "--password-stdin only applies to smtp and "
                                  "exchange configurations; use --client-secret-stdin")
        return read_secret(params.get("client_secret_stdin", False), prompt="Client secret",
                           required=required, field="client-secret")
    if params.get("client_secret_stdin"):
        raise ValidationError("client-secret", "--client-secret-stdin only applies to m365 "
                              "configurations; use --password-stdin")
    return read_secret(params.get("password_stdin", False), prompt="Password",
                       required=required, field="password")


def mail_settings(env: Mapping[str, str]) -> MailSettings:
    """Base URLs and the SMTP CA file from the CLI's environment (read when a command runs)."""
    return MailSettings(
        graph_base=env.get("WATCH_GRAPH_BASE_URL", "").strip() or DEFAULT_GRAPH_BASE,
        authority_base=(env.get("WATCH_M365_AUTHORITY_BASE_URL", "").strip()
                        or DEFAULT_AUTHORITY_BASE),
        smtp_ca_file=env.get("WATCH_SMTP_CA_FILE", "").strip() or None)


def _warn_clear_auth(config: svc.EmailNotificationConfig, fields: dict[str, Any]) -> None:
    """Say on stderr when the login may travel in clear, or when mail will be refused for it."""
    if config.provider != EmailProvider.SMTP:
        return
    if fields.get("smtp_allow_insecure_auth"):
        click.echo(f"warning: email configuration {config.name!r} may send its username and "
                   "password without TLS (--allow-insecure-auth): anyone on the network path "
                   "can read them; use this only for a trusted local relay", err=True)
    elif config.smtp_username and not config.smtp_use_tls and not config.smtp_allow_insecure_auth:
        click.echo(f"warning: email configuration {config.name!r} has a username but TLS is "
                   "off: nothing will be sent (credentials never go in clear) until you turn "
                   "TLS on (--tls) or allow it (--allow-insecure-auth)", err=True)


def _config_data(session: Any, config: svc.EmailNotificationConfig) -> dict[str, Any]:
    data = svc.email_config_to_dict(config)
    data["links"] = [svc.link_to_dict(link) for link in svc.links_for_config(session, config.id)]
    return data


def _server(data: dict[str, Any]) -> str:
    if data["provider"] == EmailProvider.SMTP:
        return f"{data['smtp_host']}:{data['smtp_port']}"
    if data["provider"] == EmailProvider.EXCHANGE:
        return f"{data['exchange_server']}:{data['smtp_port']}"
    return f"tenant {data['m365_tenant_id']}"


@click.group()
def email() -> None:
    """Manage email notification configurations (SMTP, Exchange, Microsoft 365) and links.

    A source's linked configurations mail a summary after each scan that imported, stitched or
    failed something. Secrets come from stdin (--password-stdin, --client-secret-stdin) or a
    hidden prompt, never from arguments.
    """


@email.command("add")
@email_options
@pass_cli
def add(cli: CliContext, **params: Any) -> None:
    """Add an email configuration; its secret is read from stdin or a prompt."""
    provider = params.get("provider")
    if not params.get("name"):
        raise ValidationError("name", "is required (--name)")
    if provider is None:
        raise ValidationError("provider", "is required (--provider smtp|exchange|m365)")
    fields = _fields(params, provider)
    needed = provider == EmailProvider.M365 or bool(params.get("username"))
    secret = _secret(params, provider, required=needed)
    box = cli.box() if secret else None
    with cli.session() as session:
        created = svc.create_email_config(session, box, fields=fields, secret=secret)
        click.echo(f"added {created.provider} email configuration {created.name!r} "
                   f"(id {created.id})")
        _warn_clear_auth(created, fields)


@email.command("update")
@click.argument("ref", metavar="NAME")
@email_options
@pass_cli
def update(cli: CliContext, ref: str, **params: Any) -> None:
    """Change fields of the configuration NAME (name or id); others keep their value."""
    with cli.session() as session:
        target = svc.find_email_config(session, ref)
        fields = _fields(params, target.provider)
        secret = _secret(params, target.provider, required=False)
        if not fields and secret is None:
            raise ValidationError("options", "nothing to update: give at least one option")
        box = cli.box() if secret else None
        svc.update_email_config(session, box, target, fields=fields, secret=secret)
        changed = sorted(fields) + (["secret"] if secret is not None else [])
        click.echo(f"updated email configuration {target.name!r}: {', '.join(changed)}")
        _warn_clear_auth(target, fields)


_LIST_COLUMNS = (Column("ID", 4, right=True), Column("NAME", 24), Column("PROVIDER", 8),
                 Column("ON", 3), Column("FROM", 28), Column("LINKS", 5, right=True),
                 Column("TEST", 6), Column("SERVER"))


@email.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def list_(cli: CliContext, as_json: bool) -> None:
    """List email configurations with their last test and linked sources."""
    with cli.session() as session:
        rows = [_config_data(session, c) for c in svc.list_email_configs(session)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no email configurations; add one with `watch-pipeline email add`")
        return
    print_table(_LIST_COLUMNS, (
        (d["id"], d["name"], d["provider"], "yes" if d["is_enabled"] else "no",
         d["from_address"], len(d["links"]), d["test_status"], _server(d))
        for d in rows))


@email.command("show")
@click.argument("ref", metavar="NAME")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def show(cli: CliContext, ref: str, as_json: bool) -> None:
    """Show every field of the configuration NAME and its links; the secret as has_secret."""
    with cli.session() as session:
        data = _config_data(session, svc.find_email_config(session, ref))
    if as_json:
        emit_json(data)
        return
    links = data.pop("links")
    pairs: list[tuple[str, Any]] = list(data.items())
    for link in links:
        on = [w for w, flag in (("success", link["notify_on_success"]),
                                ("error", link["notify_on_error"])) if flag]
        extra = ", ".join(link["additional_recipients"]) or "-"
        pairs.append(("link", f"source {link['source_name']!r} on {'+'.join(on) or 'nothing'}; "
                      f"also to {extra}"))
    print_fields(pairs if links else [*pairs, ("links", None)])


@email.command("remove")
@click.argument("ref", metavar="NAME")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def remove(cli: CliContext, ref: str, yes: bool) -> None:
    """Remove the configuration NAME and its links to sources."""
    with cli.session() as session:
        target = svc.find_email_config(session, ref)
        if not yes and not click.confirm(f"remove email configuration {target.name!r}?",
                                         default=False):
            click.echo("not removed")
            return
        name = target.name
        links = svc.delete_email_config(session, target)
    click.echo(f"removed email configuration {name!r} ({links} source link(s))")


@email.command("test")
@click.argument("ref", metavar="NAME")
@click.option("--to", "to", metavar="ADDR",
              help="Recipient(s) of the test message (default: the configuration's).")
@pass_cli
def test(cli: CliContext, ref: str, to: str | None) -> None:
    """Send one real test message through the configuration NAME and record the result.

    The outcome is stored as test_status (ok/error), test_message and last_tested_at; a failure
    exits 1 with the reason.

    Optional environment, read when the command runs: WATCH_SMTP_CA_FILE (PEM file of extra CAs
    trusted for SMTP/Exchange TLS), WATCH_GRAPH_BASE_URL (default
    https://graph.microsoft.com/v1.0), WATCH_M365_AUTHORITY_BASE_URL (default
    https://login.microsoftonline.com) and REQUESTS_CA_BUNDLE (CAs for both Microsoft 365 URLs).
    """
    ok, note = False, ""
    with cli.session() as session:
        config = svc.find_email_config(session, ref)
        config_id, name, provider = config.id, config.name, config.provider
        to_list = recipients(to if to else config.default_recipients, field="to")
        if not to_list:
            raise ValidationError("to", "is required: the configuration has no default "
                                  "recipients (--to ADDR)")
        try:
            mailer = mailer_for_config(config, box=cli.box, settings=mail_settings(cli.environ))
        except MailError as exc:
            mailer, note = None, str(exc)
        from_address = config.from_address
    if mailer is not None:
        subject, text, html = render_test_message(name, provider=provider,
                                                  description=mailer.description)
        message = EmailMessage(subject=subject, text=text, html=html, to=to_list,
                               from_address=from_address)
        try:
            mailer.send(message)
        except MailError as exc:
            note = str(exc)
        else:
            ok, note = True, f"test message sent to {', '.join(to_list)}"
    with cli.session() as session:
        svc.record_test_result(session, svc.find_email_config(session, config_id), ok, note)
    if not ok:
        fail(f"email configuration {name!r}: {note}")
    click.echo(f"email configuration {name!r}: OK, {note}")


@email.command("link")
@click.argument("ref", metavar="NAME")
@click.option("--source", "source_ref", required=True, metavar="S",
              help="The watch source (name or id).")
@click.option("--recipients", "extra", metavar="A,B",
              help="Comma-separated addresses added to the configuration's defaults.")
@click.option("--no-success", is_flag=True, help="Do not mail when a scan imported something.")
@click.option("--no-error", is_flag=True, help="Do not mail when a scan or import failed.")
@pass_cli
def link(cli: CliContext, ref: str, source_ref: str, extra: str | None, no_success: bool,
         no_error: bool) -> None:
    """Link the configuration NAME to a source (again: replaces the link's settings)."""
    with cli.session() as session:
        config = svc.find_email_config(session, ref)
        target = find_source(session, source_ref)
        created = svc.link_source(session, config, target, additional_recipients=extra,
                                  notify_on_success=not no_success,
                                  notify_on_error=not no_error)
        everyone = recipients(config.default_recipients, created.additional_recipients)
        on = [w for w, flag in (("success", created.notify_on_success),
                                ("error", created.notify_on_error)) if flag]
        click.echo(f"linked email configuration {config.name!r} to source {target.name!r}: "
                   f"mail on {' and '.join(on) or 'nothing'} to "
                   f"{', '.join(everyone) or 'nobody'}")
        if not everyone:
            click.echo("warning: no recipients (neither defaults nor --recipients): nothing "
                       "will be sent", err=True)
        if not on:
            click.echo("warning: --no-success and --no-error: this link never sends", err=True)


@email.command("unlink")
@click.argument("ref", metavar="NAME")
@click.option("--source", "source_ref", required=True, metavar="S",
              help="The watch source (name or id).")
@pass_cli
def unlink(cli: CliContext, ref: str, source_ref: str) -> None:
    """Remove the link between the configuration NAME and a source."""
    with cli.session() as session:
        config = svc.find_email_config(session, ref)
        target = find_source(session, source_ref)
        svc.unlink_source(session, config, target)
        click.echo(f"unlinked email configuration {config.name!r} from source {target.name!r}")
