#!/usr/bin/env python3
"""Independent reference implementation of the one-time knock sequence derivation.

Written from docs/PROTOCOL.md (sections 2-5) alone, without looking at the Rust
implementation, so that the test vectors it produces check that the document is precise
enough for a third party.  Python 3.11 standard library only.

Usage:
    python3 reference.py generate > sequences.toml    # write the test vectors
    python3 reference.py check sequences.toml         # recompute and compare them

A vector with `fail = true` is an expected failure: its `expected` is what a named mistake
(`mistake`, one of MISTAKES) makes of the same inputs, so a correct implementation must NOT
reproduce it. `check` recomputes every vector; it exits 0 when every vector behaves as marked
(the others match, the `fail` ones do not, and a named mistake does reproduce its vector), 1
(naming the first one) when one does not, and 2 on a malformed file or bad usage.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import sys
import tomllib

# --------------------------------------------------------------------------------------
# Section 3: the derivation message
# --------------------------------------------------------------------------------------

DOMAIN_LABEL = b"one-time-knock/sequence"  # 23 bytes
VERSION = b"\x01"
PURPOSES = ("open", "close")
MODES = ("hotp", "totp")
PROTO_ORDER = ("tcp", "udp")  # section 2: tcp is ordered before udp
NAME_RE = re.compile(rb"[a-z0-9_-]{1,64}")  # section 1: door and client names


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def field(data: bytes) -> bytes:
    """A field: its length as a big-endian u16, then its bytes."""
    if len(data) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    return u16(len(data)) + data


def canonical_source(source: str) -> bytes:
    """The 16-byte source address of field 11.

    IPv6 addresses are used as is; IPv4 addresses as the IPv4-mapped IPv6 address
    ::ffff:a.b.c.d.  So "198.18.0.9" and "::ffff:198.18.0.9" give the same bytes.
    """
    addr = ipaddress.ip_address(source)
    if isinstance(addr, ipaddress.IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + addr.packed
    if addr.scope_id is not None:
        # The document does not say what to do with a zone index; refuse it.
        raise ValueError(f"source {source!r}: zone index not supported")
    return addr.packed


def message(
    *,
    purpose: str,
    part: str,
    server_id: bytes,
    door: str,
    client: str,
    mode: str,
    counter: int,
    epoch: int,
    source: str | None,
) -> bytes:
    """The derivation message M for one stream (`part` is "first" or "rest")."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r}")
    if part not in ("first", "rest"):
        raise ValueError(f"part {part!r}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} has no derived sequence")
    if len(server_id) != 16:
        raise ValueError("server id must be 16 bytes")
    door_b, client_b = door.encode("ascii"), client.encode("ascii")
    for what, name in (("door", door_b), ("client", client_b)):
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"{what} name {name!r} is not 1-64 bytes of a-z 0-9 _ -")
    if not 0 <= counter < 1 << 64:
        raise ValueError("counter out of u64 range")

    # Field 10: hotp carries the UTC day as 4 bytes; totp an empty field.
    if mode == "hotp":
        if not 0 <= epoch < 1 << 32:
            raise ValueError("epoch out of u32 range")
        epoch_b = u32(epoch)
    else:
        epoch_b = b""

    # Field 11: only the `rest` stream of a source-bound door carries the source.
    source_b = canonical_source(source) if (part == "rest" and source is not None) else b""

    return b"".join(
        field(x)
        for x in (
            DOMAIN_LABEL,  # 1 domain label
            VERSION,  # 2 version
            purpose.encode("ascii"),  # 3 purpose
            part.encode("ascii"),  # 4 part
            server_id,  # 5 server id
            door_b,  # 6 door
            client_b,  # 7 client
            mode.encode("ascii"),  # 8 mode
            u64(counter),  # 9 counter
            epoch_b,  # 10 epoch
            source_b,  # 11 source
        )
    )


# --------------------------------------------------------------------------------------
# Section 4: the byte stream and the draw
# --------------------------------------------------------------------------------------


# Mistakes a third-party implementation could make in section 4 step 3 and section 5 (the
# skip-the-previous-symbol rule). Expected-failure vectors carry one: a correct implementation
# must not reproduce them, and `check` confirms that the mistake does.
MISTAKES = {
    "no-skip": "keeps a symbol equal to the previous knock's",
    "shift-instead-of-redraw": "replaces a symbol equal to the previous one by the next symbol (v+1 mod N)",
    "no-recheck-after-skip": "after skipping a word, takes the next word without checking it again",
    "avoid-first-knock": "avoids the symbol of knock 1 for every knock, not the previous knock's",
}


class Stream:
    """HMAC-SHA256(k, M || u32(j)) for j = 0, 1, 2, ... read as one plain byte sequence.

    `u32(j)` is appended raw (big-endian, no length prefix).  `rejections` counts draws
    thrown away by the bias rule (step 2), `avoided` those thrown away by the
    adjacent-distinct rule (step 3) and `most_avoided` the most avoided within one draw; all
    are only for choosing interesting vectors.  `mistake` (one of MISTAKES, or None) makes
    the stream draw wrongly, for expected-failure vectors.
    """

    def __init__(self, key: bytes, msg: bytes, mistake: str | None = None) -> None:
        self.key, self.msg = key, msg
        self.mistake = mistake
        self.block_index = 0
        self.buf = b""
        self.rejections = 0
        self.avoided = 0
        self.most_avoided = 0
        self.blocks_used = 0

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:  # a word may take its bytes from two blocks
            block = hmac.new(self.key, self.msg + u32(self.block_index), hashlib.sha256).digest()
            self.block_index += 1
            self.blocks_used += 1
            self.buf += block
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def draw(self, n: int, avoid: int | None) -> int:
        """Draw a symbol below n, never equal to `avoid`."""
        if n < 1 or (n == 1 and avoid is not None):
            raise ValueError("alphabet too small to draw from")
        limit = (1 << 32) - ((1 << 32) % n)  # L = 2^32 - (2^32 mod N)
        avoided_here = 0
        while True:
            x = int.from_bytes(self.take(4), "big")
            if x >= limit:
                self.rejections += 1
                continue
            v = x % n
            if v == avoid and self.mistake != "no-skip":
                self.avoided += 1
                avoided_here += 1
                self.most_avoided = max(self.most_avoided, avoided_here)
                if self.mistake == "shift-instead-of-redraw":
                    return (v + 1) % n
                if self.mistake == "no-recheck-after-skip":
                    return self.draw(n, None)
                continue
            return v


# --------------------------------------------------------------------------------------
# Sections 2 and 5: the alphabet and a sequence of K knocks
# --------------------------------------------------------------------------------------


def alphabet(range_first: int, range_last: int, protocols: list[str]) -> tuple[int, list[str]]:
    """Return (P, ordered protocols); the alphabet size is N = P * len(protocols)."""
    if not 1 <= range_first <= range_last <= 65535:
        raise ValueError(f"bad knock range {range_first}-{range_last}")
    if not protocols or len(set(protocols)) != len(protocols):
        raise ValueError(f"bad protocol list {protocols!r}")
    for p in protocols:
        if p not in PROTO_ORDER:
            raise ValueError(f"unknown protocol {p!r}")
    ordered = [p for p in PROTO_ORDER if p in protocols]  # tcp before udp, whatever the input
    return range_last - range_first + 1, ordered


def derive_detailed(
    key: bytes,
    server_id: bytes,
    door: str,
    client: str,
    mode: str,
    counter: int,
    epoch: int,
    purpose: str,
    range_first: int,
    range_last: int,
    protocols: list[str],
    length: int,
    source: str | None,
    mistake: str | None = None,
) -> tuple[list[tuple[int, str]], dict]:
    """derive() plus the messages and stream statistics (for vectors and debugging).

    `mistake` (one of MISTAKES) derives wrongly on purpose, for expected-failure vectors."""
    if mistake is not None and mistake not in MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}")
    if len(key) != 32:
        raise ValueError("key must be 32 bytes")
    if length < 1:
        raise ValueError("a sequence has at least one knock")
    p, protos = alphabet(range_first, range_last, protocols)
    n = p * len(protos)

    common = dict(
        purpose=purpose,
        server_id=server_id,
        door=door,
        client=client,
        mode=mode,
        counter=counter,
        epoch=epoch,
        source=source,
    )
    first_msg = message(part="first", **common)
    rest_msg = message(part="rest", **common)

    # Knock 1: the `first` stream, nothing to avoid.
    first = Stream(key, first_msg)
    symbols = [first.draw(n, None)]
    # Knocks 2..K: one continuous `rest` stream, each avoiding the previous symbol.
    rest = Stream(key, rest_msg, mistake)
    for _ in range(length - 1):
        symbols.append(rest.draw(n, symbols[0] if mistake == "avoid-first-knock" else symbols[-1]))

    knocks = [(range_first + v % p, protos[v // p]) for v in symbols]
    info = dict(
        first_message=first_msg,
        rest_message=rest_msg,
        rejections=first.rejections + rest.rejections,
        first_rejections=first.rejections,
        avoided=rest.avoided,
        most_avoided=rest.most_avoided,
        rest_blocks=rest.blocks_used,
    )
    return knocks, info


def derive(
    key: bytes,
    server_id: bytes,
    door: str,
    client: str,
    mode: str,
    counter: int,
    epoch: int,
    purpose: str,
    range_first: int,
    range_last: int,
    protocols: list[str],
    length: int,
    source: str | None,
) -> list[tuple[int, str]]:
    """The K knocks (port, proto) of one sequence, per docs/PROTOCOL.md sections 2-5."""
    knocks, _ = derive_detailed(
        key, server_id, door, client, mode, counter, epoch, purpose,
        range_first, range_last, protocols, length, source,
    )  # fmt: skip
    return knocks


# --------------------------------------------------------------------------------------
# Test vectors
# --------------------------------------------------------------------------------------

# Fixed, arbitrary test keys and server ids (not derived from anything secret).
KEY_A = bytes(range(32))
KEY_B = bytes.fromhex("5f1c0e3a9b7d24c6e8a1f30b6d5c4e2a7b9e0d1c3f5a6b8c9d0e1f2a3b4c5d6e")
KEY_C = bytes([0xA5] * 32)
SID_A = bytes.fromhex("00112233445566778899aabbccddeeff")
SID_B = bytes.fromhex("7e3a91c05d2b48f6a1c9e7d3b5f20864")

DAY = 20000  # 2024-10-04, an arbitrary UTC day
REJECT_RANGE = (255, 65535)  # P = 65281, N = 130562 with tcp+udp: 2^32 mod N is as large as it gets


def find_counter(pred, base: dict, start: int = 0, limit: int = 2_000_000) -> int:
    """The smallest counter >= start for which pred(info) holds (used once, to pick vectors)."""
    for c in range(start, start + limit):
        _, info = derive_detailed(**dict(base, counter=c))
        if pred(info):
            return c
    raise RuntimeError("no counter found")


def vector_specs() -> list[dict]:
    base = dict(
        key=KEY_A,
        server_id=SID_A,
        door="ssh",
        client="laptop",
        mode="hotp",
        counter=0,
        epoch=DAY,
        purpose="open",
        range_first=40000,
        range_last=42047,
        protocols=["tcp"],
        length=8,
        source=None,
    )

    def v(name: str, **kw) -> dict:
        return dict(dict(base, **kw), name=name)

    specs = [
        v("default-hotp-counter0"),
        v("default-hotp-counter1", counter=1),
        v("default-hotp-big-counter", counter=0x0123456789ABCDEF, key=KEY_B, server_id=SID_B,
          door="web-admin_2", client="phone"),
        v("default-hotp-epoch-minus-1", epoch=DAY - 1),
        v("default-hotp-epoch-plus-1", epoch=DAY + 1),
        v("close-purpose", purpose="close"),
        v("mixed-tcp-udp", protocols=["tcp", "udp"], range_first=50000, range_last=50099,
          length=10),
        v("udp-only", protocols=["udp"], range_first=60000, range_last=60999),
        v("tiny-range-2-ports-adjacent-distinct", range_first=40000, range_last=40001,
          length=12, key=KEY_C),
        v("k32-rest-stream-several-blocks", length=32, counter=7),
        v("source-ipv4", source="198.18.0.9", counter=3),
        v("source-ipv4-mapped-ipv6", source="::ffff:198.18.0.9", counter=3),
        v("source-ipv6", source="2001:db8::42", counter=3),
        v("totp-step", mode="totp", counter=57_600_000, epoch=DAY),
        v("totp-step-other-epoch-same-result", mode="totp", counter=57_600_000, epoch=DAY + 5),
        v("totp-close-ipv6-source", mode="totp", counter=57_600_001, purpose="close",
          source="2001:db8:1:2::7", key=KEY_B, server_id=SID_B),
    ]

    # Vectors that exercise the rejection step (x >= L): find a counter whose sequence
    # throws away at least one word, once in the `first` stream and once in `rest`.
    rej_base = dict(base, range_first=REJECT_RANGE[0], range_last=REJECT_RANGE[1],
                    protocols=["udp", "tcp"], length=32)  # fmt: skip
    c = find_counter(lambda i: i["first_rejections"] > 0, dict(rej_base, length=1))
    specs.append(v("rejection-in-first-stream",
                   **dict(rej_base, counter=c, length=4, protocols=["tcp", "udp"])))  # fmt: skip
    c = find_counter(lambda i: i["rejections"] > i["first_rejections"], rej_base)
    specs.append(v("rejection-in-rest-stream-protocols-given-udp-first", **dict(rej_base, counter=c)))

    # The skip-the-previous-symbol rule acting on alphabets of 3 symbols or more (with 2 it
    # only alternates), each beside expected failures: what a named mistake makes of the same
    # inputs. The counters are the first whose sequence exercises the rule and the mistakes.
    def spec(name: str, mistakes: list[str], pred, **kw) -> None:
        inputs = dict(base, **kw)

        def wanted(info) -> bool:
            return pred(info) and all(wrong(inputs_at, m) for m in mistakes)

        def wrong(at: dict, mistake: str) -> bool:
            return derive_detailed(**at, mistake=mistake)[0] != derive_detailed(**at)[0]

        c = None
        for counter in range(0, 100_000):
            inputs_at = dict(inputs, counter=counter)
            if wanted(derive_detailed(**inputs_at)[1]):
                c = counter
                break
        if c is None:
            raise RuntimeError(f"no counter for {name}")
        specs.append(v(name, **dict(inputs, counter=c)))
        for m in mistakes:
            specs.append(v(f"fail-{name}-{m}", **dict(inputs, counter=c), fail=True, mistake=m))

    three = dict(range_first=40000, range_last=40002, protocols=["tcp"])
    spec("skip-previous-3-symbols", ["no-skip", "shift-instead-of-redraw", "avoid-first-knock"],
         lambda i: i["avoided"] >= 2, **three)  # fmt: skip
    spec("skip-previous-3-symbols-twice-in-one-draw", ["no-recheck-after-skip"],
         lambda i: i["most_avoided"] >= 2, length=16, **three)  # fmt: skip
    spec("skip-previous-4-symbols-tcp-udp", ["no-skip"], lambda i: i["avoided"] >= 2,
         range_first=50000, range_last=50001, protocols=["udp", "tcp"], length=10)  # fmt: skip
    spec("skip-previous-default-alphabet", ["no-skip"], lambda i: i["avoided"] >= 1, length=32)
    return specs


def toml_str(s: str) -> str:
    assert all(ch.isprintable() and ch not in '"\\' for ch in s)
    return f'"{s}"'


def toml_str_array(items: list[str], per_line: int = 8) -> str:
    if len(items) <= per_line:
        return "[" + ", ".join(toml_str(x) for x in items) + "]"
    lines = [
        "    " + ", ".join(toml_str(x) for x in items[i : i + per_line]) + ","
        for i in range(0, len(items), per_line)
    ]
    return "[\n" + "\n".join(lines) + "\n]"


def generate() -> str:
    out = [
        "# Test vectors for docs/PROTOCOL.md sections 2-5 (sequence derivation).",
        "# Generated by `python3 reference.py generate > sequences.toml`; do not edit by hand.",
        "# `source` is omitted for doors without bind_source. `epoch` is ignored for totp.",
        "# `first_message_hex` / `rest_message_hex` are the derivation messages M (without the",
        "# u32 block index) of the `first` and `rest` streams.",
        "# Keys and server ids are fixed, arbitrary test values.",
        "# `fail = true` marks an expected failure: `expected` is what `mistake` (see MISTAKES in",
        "# reference.py) makes of the inputs, and a correct implementation must not reproduce it.",
        "",
    ]
    for s in vector_specs():
        inputs = {k: s[k] for k in s if k not in ("name", "fail")}
        knocks, info = derive_detailed(**inputs)
        out.append("[[vector]]")
        out.append(f"name = {toml_str(s['name'])}")
        if s.get("fail"):
            out.append("fail = true")
            out.append(f"mistake = {toml_str(s['mistake'])}")
        out.append(f"key_hex = {toml_str(s['key'].hex())}")
        out.append(f"server_id_hex = {toml_str(s['server_id'].hex())}")
        out.append(f"door = {toml_str(s['door'])}")
        out.append(f"client = {toml_str(s['client'])}")
        out.append(f"mode = {toml_str(s['mode'])}")
        out.append(f"counter = {s['counter']}")
        out.append(f"epoch = {s['epoch']}")
        out.append(f"purpose = {toml_str(s['purpose'])}")
        knock_ports = f"{s['range_first']}-{s['range_last']}"
        out.append(f"knock_ports = {toml_str(knock_ports)}")
        out.append(f"protocols = {toml_str_array(s['protocols'])}")
        out.append(f"length = {s['length']}")
        if s["source"] is not None:
            out.append(f"source = {toml_str(s['source'])}")
        out.append(f"first_message_hex = {toml_str(info['first_message'].hex())}")
        out.append(f"rest_message_hex = {toml_str(info['rest_message'].hex())}")
        out.append(f"expected = {toml_str_array([f'{p}:{q}' for p, q in knocks])}")
        out.append("")
    return "\n".join(out)


def parse_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if not m:
        raise ValueError(f"knock_ports {text!r} is not first-last")
    return int(m.group(1)), int(m.group(2))


def check(path: str) -> int:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        vectors = doc["vector"]
        if not isinstance(vectors, list) or not vectors:
            raise ValueError("no [[vector]] tables")
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError) as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2

    passes = fails = 0
    for i, vec in enumerate(vectors):
        name = vec.get("name", f"#{i}")
        fail = vec.get("fail", False)
        if fail is not True and fail is not False:
            print(f"error: vector {name!r}: fail must be true or false", file=sys.stderr)
            return 2
        if fail != name.startswith("fail-"):
            print(f"error: vector {name!r}: a name starts with fail- exactly when fail = true", file=sys.stderr)
            return 2
        mistake = vec.get("mistake")
        if fail and mistake not in MISTAKES and mistake != "edited":
            print(f"error: vector {name!r}: an expected failure names its mistake: one of "
                  f"{', '.join(MISTAKES)}, or edited (changed by hand)", file=sys.stderr)  # fmt: skip
            return 2
        try:
            first, last = parse_range(vec["knock_ports"])
            inputs = dict(
                key=bytes.fromhex(vec["key_hex"]),
                server_id=bytes.fromhex(vec["server_id_hex"]),
                door=vec["door"],
                client=vec["client"],
                mode=vec["mode"],
                counter=vec["counter"],
                epoch=vec["epoch"],
                purpose=vec["purpose"],
                range_first=first,
                range_last=last,
                protocols=vec["protocols"],
                length=vec["length"],
                source=vec.get("source"),
            )
            knocks, info = derive_detailed(**inputs)
            mistaken = derive_detailed(**inputs, mistake=mistake)[0] if mistake in MISTAKES else None
        except (KeyError, ValueError, TypeError) as e:
            if fail:
                fails += 1
                continue
            print(f"MISMATCH vector {name!r}: cannot derive: {e!r}", file=sys.stderr)
            return 1
        got = [f"{p}:{q}" for p, q in knocks]
        if fail:
            if got == vec["expected"]:
                print(f"MISMATCH vector {name!r}: marked fail, but the correct derivation reproduces it",
                      file=sys.stderr)  # fmt: skip
                return 1
            if mistaken is not None and [f"{p}:{q}" for p, q in mistaken] != vec["expected"]:
                print(f"MISMATCH vector {name!r}: the mistake {mistake!r} does not reproduce it",
                      file=sys.stderr)  # fmt: skip
                return 1
            fails += 1
            continue
        passes += 1
        if got != vec["expected"]:
            for k, (g, e) in enumerate(zip(got, vec["expected"])):
                if g != e:
                    print(f"MISMATCH vector {name!r}: knock {k + 1}: expected {e}, computed {g}",
                          file=sys.stderr)  # fmt: skip
                    break
            else:
                print(f"MISMATCH vector {name!r}: expected {len(vec['expected'])} knocks, "
                      f"computed {len(got)}", file=sys.stderr)  # fmt: skip
            return 1
        for fld, key in (("first_message_hex", "first_message"), ("rest_message_hex", "rest_message")):
            if fld in vec and vec[fld] != info[key].hex():
                print(f"MISMATCH vector {name!r}: {fld}: expected {vec[fld]}, "
                      f"computed {info[key].hex()}", file=sys.stderr)  # fmt: skip
                return 1
    print(f"ok: {passes} vectors match, {fails} expected failures fail")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] == "generate":
        sys.stdout.write(generate())
        return 0
    if len(argv) == 3 and argv[1] == "check":
        return check(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
