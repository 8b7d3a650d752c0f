"""`facelock admin`: the lock owner's side of signed MQTT commands.

- `keygen --out FILE` makes a lock's command key (32 random bytes): FILE (mode 600) goes on the lock as
  `[mqtt] command_key_file`; the same key is printed once, in base64, for the admin's machine.
- `send ... COMMAND` signs one command with that key (edge.mqtt.signing), publishes it to the lock's
  `cmd/<command>` topic, waits for the lock's reply to it and prints it. Exit status 0 when the lock says ok.

A broker account alone cannot unlock, enrol, remove or rename: the lock refuses what is not signed with
its key, stale (more than a minute off the lock's clock) or replayed.
"""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, MqttError

EPILOG = """\
examples:
  facelock admin keygen --out /etc/facelock/command.key      on the lock (or copy the file there)
  facelock admin send --key-file ~/.config/facelock/door.key --host broker.lan --tls \\
      --ca-file ca.crt --username facelock-admin --password-file ~/.config/facelock/mqtt.pw \\
      --device front_door enroll carol --frames 5           carol stands at the door camera
  ... --device front_door enroll alice --add                 add frames to alice's templates
  ... --device front_door remove bob
  ... --device front_door rename carol caroline
  ... --device front_door unlock                             open the door (works during a lockout)

Every command and its outcome is also published as an audit event (event_type "command").
"""

WAIT_S = {"enroll": 90.0}  # an enrolment replies when its frames are in (the lock waits up to 60 s)


def keygen(args: argparse.Namespace) -> int:
    from edge.mqtt.signing import encode_key, new_key, write_key_file

    key = new_key()
    path = write_key_file(args.out, key, overwrite=args.force)
    print(f"Wrote this lock's command key to {path} (mode 600); on the lock set\n"
          f"  [mqtt] command_key_file = \"{path}\"\n"
          "The same key for the admin's machine, shown only now: save it in a file of its own (chmod 600)\n"
          "and pass that file to `facelock admin send --key-file`:")
    print(encode_key(key))
    return 0


def command_body(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The command name and its JSON object (without id) from the parsed arguments."""
    name = args.action
    if name == "enroll":
        body: dict[str, Any] = {"name": args.name}
        if args.frames is not None:
            body["frames"] = args.frames
        if args.add:
            body["add"] = True
        return name, body
    if name == "remove":
        return name, {"name": args.name}
    if name == "rename":
        return name, {"name": args.name, "to": args.to}
    return name, {}


def send(args: argparse.Namespace) -> int:
    from edge.mqtt.signing import read_key_file

    key = read_key_file(args.key_file, "--key-file")
    if len(args.id) > 64:
        raise ConfigError(f"--id {args.id[:20]!r}...: at most 64 characters")
    name, body = command_body(args)
    body["id"] = args.id or uuid.uuid4().hex[:16]
    password = _read_password(args.password_file) if args.password_file else None
    timeout = args.timeout if args.timeout is not None else WAIT_S.get(name, 15.0)
    reply = publish_signed(key, args, name, body, password, timeout)
    if args.json:
        print(json.dumps(reply))
    else:
        result = ", ".join(f"{k} {v}" for k, v in (reply.get("result") or {}).items())
        print(f"{name}: ok ({result})" if reply.get("ok") else f"{name}: refused: {reply.get('error', '?')}")
    return 0 if reply.get("ok") else 1


def _read_password(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise ConfigError(f"--password-file {path!r}: cannot read a password ({type(exc).__name__})") from None


def publish_signed(key: bytes, args: argparse.Namespace, name: str, body: dict[str, Any], password: str | None,
                   timeout: float) -> dict[str, Any]:
    """Connect, subscribe to the reply topic, publish the signed command, and return the lock's reply to it
    (the reply whose `id` is ours); MqttError when the broker or the lock does not answer in time."""
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.mqtt.messages import Topics
    from edge.mqtt.signing import sign

    topics = Topics.of(args.base_topic, args.device)
    topic = topics.command(name)
    payload = sign(key, topic, body)
    port = args.port or (8883 if args.tls else 1883)
    ready, answered = threading.Event(), threading.Event()  # ready: subscribed, or the connection refused
    state: dict[str, Any] = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            state["refused"] = str(reason_code)
            ready.set()
        else:
            client.subscribe(topics.reply, qos=1)

    def on_message(client, userdata, message):
        try:
            reply = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(reply, dict) and reply.get("id") == body["id"]:
            state["reply"] = reply
            answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"facelock-admin-{uuid.uuid4().hex[:8]}",
                         clean_session=True, protocol=mqtt.MQTTv311)
    if args.username:
        client.username_pw_set(args.username, password)
    if args.tls:
        try:
            client.tls_set(ca_certs=args.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"--ca-file {args.ca_file!r}: {exc}") from None
        client.tls_insecure_set(args.tls_insecure)
    client.on_connect = on_connect
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = on_message
    where = f"{args.host}:{port}"
    try:
        client.connect(args.host, port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise MqttError(f"cannot connect to the broker at {where}: {exc}") from None
    client.loop_start()
    try:
        if not ready.wait(timeout) or "refused" in state:
            raise MqttError(f"broker {where} refused the connection or the subscription to {topics.reply}: "
                            f"{state.get('refused', 'no answer')}")
        client.publish(topic, payload, qos=1).wait_for_publish(timeout)
        if not answered.wait(timeout):
            raise MqttError(f"no reply on {topics.reply} within {timeout:g} s: is the lock online with "
                            f"commands = true, and may this account publish to {topic} (broker ACL)?")
        return state["reply"]
    finally:
        client.disconnect()
        client.loop_stop()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("admin", help="the owner's side of signed MQTT commands (keygen, send)",
                       description=__doc__.split("\n\n")[0], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    k = actions.add_parser("keygen", help="make a lock's command key")
    k.add_argument("--out", required=True, metavar="FILE", help="key file for the lock (written mode 600)")
    k.add_argument("--force", action="store_true", help="replace FILE if it exists (the old key stops working)")
    k.set_defaults(handler=keygen)

    s = actions.add_parser("send", help="sign a command, publish it and print the lock's reply",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--key-file", required=True, metavar="FILE", help="the lock's command key (base64)")
    s.add_argument("--host", required=True, help="broker host")
    s.add_argument("--port", type=int, default=0, help="broker port (default 8883 with --tls, else 1883)")
    s.add_argument("--tls", action="store_true", help="connect with TLS")
    s.add_argument("--ca-file", default="", help="CA certificate to verify the broker with (default: the system's)")
    s.add_argument("--tls-insecure", action="store_true", help="do not check the broker's host name (tests only)")
    s.add_argument("--username", default="", help="broker user name")
    s.add_argument("--password-file", default="", metavar="FILE", help="file whose first line is the password")
    s.add_argument("--base-topic", default="facelock", help="the lock's mqtt.base_topic (default facelock)")
    s.add_argument("--device", required=True, help="the lock's mqtt.device_id")
    s.add_argument("--id", default="", help="request id echoed in the reply (default: random)")
    s.add_argument("--timeout", type=float, default=None, help="seconds to wait for the reply (enroll 90, else 15)")
    s.add_argument("--json", action="store_true", help="print the lock's reply as JSON")
    s.set_defaults(handler=send)
    cmds = s.add_subparsers(dest="action", metavar="COMMAND", required=True)
    e = cmds.add_parser("enroll", help="enrol whoever stands at the lock's camera as NAME")
    e.add_argument("name")
    e.add_argument("--frames", type=int, default=None, help="usable frames to take (lock default 5)")
    e.add_argument("--add", action="store_true", help="NAME is enrolled already: add to their templates")
    cmds.add_parser("remove", help="remove a person").add_argument("name")
    r = cmds.add_parser("rename", help="rename a person")
    r.add_argument("name")
    r.add_argument("to")
    cmds.add_parser("unlock", help="open the door")
    cmds.add_parser("reload", help="re-read the gallery")
