"""The `edgepcap` command tree: the Typer app, its sub-apps, every command's name, `main`.

The commands live in their own modules and are registered here, in the order that
`edgepcap --help` lists them; those modules import nothing of this one, so there is no
import cycle. They keep their heavy imports (uvicorn, the API app, Alembic, the database)
inside the functions: `edgepcap --help` and the customer commands load none of them.
"""

from __future__ import annotations

import typer

from edgepcap.cli import admin, agent, customer, extcap, lab, server, traffic

app = typer.Typer(help="edgepcap: on-demand packet captures at the edge.", no_args_is_help=True)
accounts_app = typer.Typer(help="Manage customer accounts (administration).", no_args_is_help=True)
pcaps_app = typer.Typer(
    help="Packet captures: create, watch, stop, download.", no_args_is_help=True
)
buckets_app = typer.Typer(
    help="Buckets for full captures: add, validate, list, delete.", no_args_is_help=True
)
triggers_app = typer.Typer(
    help="Full captures that start themselves when sampled traffic spikes.",
    no_args_is_help=True,
)
agents_app = typer.Typer(
    help="Manage edge agent credentials (administration).", no_args_is_help=True
)
extcap_app = typer.Typer(
    help="An `edgepcap` interface in Wireshark's capture list.", no_args_is_help=True
)
lab_app = typer.Typer(
    help="The lab: edge machines and customers in network namespaces.", no_args_is_help=True
)
app.add_typer(accounts_app, name="accounts")
app.add_typer(pcaps_app, name="pcaps")
app.add_typer(buckets_app, name="buckets")
app.add_typer(triggers_app, name="triggers")
app.add_typer(agents_app, name="agents")
app.add_typer(extcap_app, name="extcap")
app.add_typer(lab_app, name="lab")

app.command()(server.api)
app.command()(server.up)
app.command()(agent.agent)
app.command()(traffic.traffic)

accounts_app.command("create")(admin.accounts_create)
accounts_app.command("list")(admin.accounts_list)
accounts_app.command("add-prefix")(admin.accounts_add_prefix)
accounts_app.command("rotate-token")(admin.accounts_rotate_token)

agents_app.command("create-key")(admin.agents_create_key)
agents_app.command("revoke-key")(admin.agents_revoke_key)
agents_app.command("list")(admin.agents_list)
agents_app.command("clickhouse-users")(admin.agents_clickhouse_users)

pcaps_app.command("create")(customer.create)
pcaps_app.command("list")(customer.list_)
pcaps_app.command("get")(customer.get)
pcaps_app.command("stop")(customer.stop)
pcaps_app.command("watch")(customer.watch)
pcaps_app.command("download")(customer.download)
pcaps_app.command("summary")(customer.summary)

buckets_app.command("add")(customer.bucket_add)
buckets_app.command("validate")(customer.bucket_validate)
buckets_app.command("list")(customer.bucket_list)
buckets_app.command("delete")(customer.bucket_delete)

triggers_app.command("create")(traffic.triggers_create)
triggers_app.command("list")(traffic.triggers_list)
triggers_app.command("get")(traffic.triggers_get)
triggers_app.command("delete")(traffic.triggers_delete)

extcap_app.command("install")(extcap.install)
extcap_app.command("uninstall")(extcap.uninstall)

lab_app.command("up")(lab.lab_up)
lab_app.command("down")(lab.lab_down)
lab_app.command("traffic")(lab.lab_traffic)


def main() -> None:
    app()
