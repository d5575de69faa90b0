"""The demo's stand-ins for real providers: every local peer of localparts/peers/ on the ports that
config/providers.yaml expects, with throwaway keys generated for this run.

`DemoPeers.start()` returns the environment that switches those providers on (SWITCHBOARD_DEMO_*), for
the worker and API processes the demo starts; nothing here is used outside the demo and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from localparts.peers import aliyun_sms, apns, fcm, jpush, robots, sms_gateway, tencent_sms, wechat
from localparts.peers.server import ThreadedPeer

# The defaults config/providers.yaml falls back to; the peers are started with the same values.
ALIYUN = ("LTAI5tDemoKeyId", "demo-aliyun-secret")
TENCENT = ("AKIDdemoSecretId", "demo-tencent-key", "1400000001")
GATEWAY_SECRET = "demo-gateway-secret"  # noqa: S105 - a throwaway value the local peer accepts
WECHAT = ("wx0123456789abcdef", "demo-wechat-secret", "demo-wechat-push-token")
JPUSH = ("demojpushappkey0000000", "demo-jpush-master-secret")
FCM_PROJECT, FCM_EMAIL = "switchboard-demo", "push@switchboard-demo.iam.gserviceaccount.com"
APNS_TEAM, APNS_KEY, APNS_TOPIC = "DEMOTEAM01", "DEMOKEY001", "edu.example.campus"
ROBOT_DINGTALK = ("demo-dingtalk-token", "SECdemo-dingtalk-secret")
ROBOT_WECOM = "demo-wecom-key"
ROBOT_FEISHU = ("demo-feishu-hook", "demo-feishu-secret")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class DemoPeers:
    """All provider peers on loopback; `received()` tells how many sends each one accepted."""

    folder: Path
    public_url: str
    templates: Path
    _running: list[_Stoppable] = field(default_factory=list)
    _apps: dict[str, web.Application] = field(default_factory=dict)
    _apns: apns.ApnsApp | None = None

    def start(self) -> dict[str, str]:
        """Start every peer; return the environment that enables their providers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fcm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        apns_key = ec.generate_private_key(ec.SECP256R1())
        cert_file, cert_key = apns.write_self_signed_certificate(self.folder)
        self._apps = {
            "aliyun": aliyun_sms.create_app(*ALIYUN),
            "tencent": tencent_sms.create_app(*TENCENT),
            "http-sms": sms_gateway.create_app(GATEWAY_SECRET),
            "fcm": fcm.create_app(
                project_id=FCM_PROJECT, client_email=FCM_EMAIL, public_key_pem=_public_pem(fcm_key)
            ),
            "jpush": jpush.create_app(app_key=JPUSH[0], master_secret=JPUSH[1]),
            "wechat": wechat.create_app(
                WECHAT[0], WECHAT[1],
                push_url=f"{self.public_url}/v1/callbacks/wechat-oa", push_token=WECHAT[2],
            ),
            "robots": robots.create_app(
                dingtalk={ROBOT_DINGTALK[0]: ROBOT_DINGTALK[1]},
                wecom={ROBOT_WECOM},
                feishu={ROBOT_FEISHU[0]: ROBOT_FEISHU[1]},
            ),
        }
        # The peer accepts only template ids "registered" with it: those the template files name.
        self._apps["wechat"][wechat.PEER].templates |= _wechat_template_ids(self.templates)
        ports = {"aliyun": 18101, "tencent": 18102, "http-sms": 18103, "fcm": 18111, "jpush": 18113,
                 "wechat": 18121, "robots": 18131}
        for name, port in ports.items():
            self._running.append(ThreadedPeer(self._apps[name], port=port).start())
        self._apns = apns.create_app(
            team_id=APNS_TEAM, key_id=APNS_KEY, public_key_pem=_public_pem(apns_key), topic=APNS_TOPIC
        )
        self._running.append(apns.ThreadedApnsPeer(self._apns, cert_file, cert_key, port=18112).start())
        return {
            "SWITCHBOARD_DEMO_PEERS": "true",
            "SWITCHBOARD_DEMO_PUSH": "true",
            "SWITCHBOARD_DEMO_FCM_PRIVATE_KEY": _private_pem(fcm_key),
            "SWITCHBOARD_DEMO_APNS_PRIVATE_KEY": _private_pem(apns_key),
            "SWITCHBOARD_DEMO_APNS_CA_FILE": str(cert_file),
        }

    def wechat_reports(self) -> int:
        """Delivery reports the WeChat peer pushed to the API and the API acknowledged."""
        return sum(status == 200 for status in self._apps["wechat"][wechat.PEER].pushed)

    def received(self) -> dict[str, int]:
        """Messages each channel's peers accepted, for checking the report against the providers."""
        apps = self._apps
        sms = sum(
            len(state.received)
            for state in (apps["aliyun"][aliyun_sms.STATE], apps["tencent"][tencent_sms.STATE],
                          apps["http-sms"][sms_gateway.STATE])
        )
        push = len(apps["fcm"][fcm.STATE].received) + len(apps["jpush"][jpush.STATE].received)
        push += len(self._apns.state.received) if self._apns is not None else 0
        return {
            "sms": sms,
            "push": push,
            # The WeChat peer also records token requests, and sends refused for their token.
            "wechat": sum(bool(r.get("token_ok")) for r in apps["wechat"][wechat.PEER].received),
            "robot": len(apps["robots"][robots.PEER].received),
        }

    def stop(self) -> None:
        for peer in reversed(self._running):
            peer.stop()
        self._running.clear()


def _wechat_template_ids(folder: Path) -> set[str]:
    ids: set[str] = set()
    for path in folder.glob("*.yaml"):
        parts = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for channel in ("wechat_oa", "wechat_mp"):
            ids.update(str(v) for v in (parts.get(channel) or {}).get("template_ids", {}).values())
    return ids


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
