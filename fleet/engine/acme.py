"""Automatic certificates over ACME (RFC 8555) with certbot's `acme` library: an order for a service's hosts,
answered by HTTP-01 through HAProxy on every lb node (the caller publishes each token), then finalized.

The library is synchronous (requests); its calls run in a thread so the controller's loop keeps serving.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.core.edge import AcmeSettings
from fleet.core.errors import AcmeError

ORDER_TIMEOUT = 90.0


@dataclass(frozen=True)
class Issued:
    """A new certificate: its chain (PEM) and its private key (PEM, never printed), and the ACME account's key
    (PEM) the order was placed with, to keep for the next order."""

    chain: bytes
    key: bytes
    account_key: bytes = b""

    def __repr__(self) -> str:
        return "Issued(chain=..., key=***)"


Publish = Callable[[Sequence[tuple[str, str]]], Awaitable[None]]


@dataclass
class _Order:
    """An order in flight (the library's objects) and the new key (PEM)."""

    client: Any
    order: Any
    answers: list[tuple[Any, Any, str, str]]  # (challenge, response, token, key authorization)
    key_pem: bytes
    account_pem: bytes


def _start(settings: AcmeSettings, hosts: Sequence[str], account_pem: bytes | None) -> _Order:
    from acme import challenges, client, crypto_util, errors, messages
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from josepy.jwk import JWKRSA

    if account_pem:
        loaded = serialization.load_pem_private_key(account_pem, password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise AcmeError("the stored ACME account key is not an RSA key")
        rsa_key = loaded
    else:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account_key = JWKRSA(key=rsa_key)
    # requests takes a CA bundle path where the library's annotation says bool: a private CA (a test server's)
    # is trusted by this client only.
    verify: Any = settings.ca_file or True
    net = client.ClientNetwork(account_key, user_agent="fleet", verify_ssl=verify)
    directory = client.ClientV2.get_directory(settings.directory, net)
    acme = client.ClientV2(directory, net=net)
    try:
        acme.new_account(messages.NewRegistration.from_data(email=settings.email, terms_of_service_agreed=True))
    except errors.ConflictError:
        # The key already has an account (the one kept from an earlier order): use it.
        acme.query_registration(messages.RegistrationResource(uri="", body=messages.Registration()))
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    order = acme.new_order(crypto_util.make_csr(key_pem, list(hosts)))
    answers = []
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue  # the CA reuses a recent validation of this account (Let's Encrypt does, for 30 days)
        chall = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
        if chall is None:
            raise AcmeError(f"the ACME server offers no http-01 challenge for {authz.body.identifier.value}")
        response, validation = chall.response_and_validation(account_key)
        answers.append((chall, response, chall.chall.encode("token"), validation))
    account_out = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return _Order(acme, order, answers, key_pem, account_out)


def _finish(o: _Order) -> bytes:
    for chall, response, _, _ in o.answers:
        o.client.answer_challenge(chall, response)
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
    done = o.client.poll_and_finalize(o.order, deadline)
    if not done.fullchain_pem:
        raise AcmeError("the ACME server finalized the order without a certificate")
    return str(done.fullchain_pem).encode()


async def issue(settings: AcmeSettings, hosts: Sequence[str], publish: Publish, withdraw: Publish,
                account_key: bytes | None = None) -> Issued:
    """A certificate for `hosts`: `publish` gets every (token, key authorization) to serve before the server is
    told to validate; `withdraw` the same once it is done (also after a failure). `account_key`: the account's
    key (PEM) from an earlier order; without it a new account is made. Raises AcmeError."""
    try:
        order = await asyncio.to_thread(_start, settings, hosts, account_key)
    except AcmeError:
        raise
    except Exception as exc:  # the library raises requests', josepy's and its own errors
        raise AcmeError(f"cannot order a certificate from {settings.directory}: {_reason(exc)}") from exc
    tokens = [(token, validation) for _, _, token, validation in order.answers]
    await publish(tokens)
    try:
        chain = await asyncio.to_thread(_finish, order)
    except AcmeError:
        raise
    except Exception as exc:
        raise AcmeError(f"the ACME order for {', '.join(hosts)} failed: {_reason(exc)}") from exc
    finally:
        await withdraw(tokens)
    return Issued(chain, order.key_pem, order.account_pem)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]
