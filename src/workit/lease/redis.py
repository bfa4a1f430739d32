"""``Redis``: a fleet coordinated through a Redis server (extra ``workit-jobs[redis]``).

Every sync is one ``EVALSHA`` of one Lua script (loaded on first use and
again after a ``NOSCRIPT``), atomic on the server and timed by the server's
``TIME``. The keys of a group share one hash tag, ``workit:{group}:``:

- ``members``: hash, member id -> msgpack ``[identity, [units]]``;
- ``expiry``: sorted set, member id -> lease expiry (server µs);
- ``units``: hash, unit -> msgpack ``[owner, token, revision, running,
  last_finished, next_due, cooler]`` (times in server µs, -1 for none);
- ``revisions``: sorted set, unit -> revision, to read only what changed;
- ``counter``: tokens and revisions, ``max(INCR, server time in µs)``, so a
  server that restarts without persistence still never hands out a number
  it handed out before;
- ``members-revision``: bumped on every join, leave and expiry;
- ``hold``: after a member found the group's data lost (a restart without
  persistence), the server time (µs) before which no unit claimed since may
  start: the previous owners may still trust leases the server forgot;
- ``departed``: sorted set, expired member id -> when its lease ran out
  (server µs), kept for ``DEPARTED_KEPT`` ttls: a takeover of its units
  counts their cooler from a margin after then.

Releases, joins, leaves and expiries are announced on the pub/sub channel
``workit:{group}:notices`` (the payload is the sender's member id), and the
other members sync at once. Needs the asyncio backend (redis-py's client).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import anyio

try:
    import redis.asyncio as redis_asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError
except ImportError as error:  # pragma: no cover - exercised with the driver hidden
    raise ImportError(
        "workit.lease.Redis needs the redis package: pip install 'workit-jobs[redis]'"
    ) from error

from workit.lease._membership import Membership
from workit.lease._roster import Roster, build
from workit.lease._settings import Configured, Live, check_units, check_url, redact, settings
from workit.lease._store import DEPARTED_KEPT, Hold, Member, Record, Reply

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Sequence

    from workit._duration import Duration
    from workit.lease._store import Request

__all__ = ["Redis"]

SCRIPT = """
local members, expiry, units, revisions, counter, members_revision, hold, departed =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local me, identity = ARGV[1], ARGV[2]
local join, leave = ARGV[3] == '1', ARGV[4] == '1'
local ttl = tonumber(ARGV[5])
local known_members, known_records = tonumber(ARGV[6]), tonumber(ARGV[7])
local channel = ARGV[8]
local held = tonumber(ARGV[9])
local drain = ARGV[10] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local function int(n) return string.format('%d', n) end

local function fresh()
  local n = redis.call('INCR', counter)
  if n < now then
    n = now
    redis.call('SET', counter, int(n))
  end
  return n
end

local function load(unit)
  local packed = redis.call('HGET', units, unit)
  if not packed then return nil end
  return cmsgpack.unpack(packed)
end

local function save(unit, r)
  redis.call('HSET', units, unit, cmsgpack.pack(r))
  redis.call('ZADD', revisions, int(r[3]), unit)
end

local changed = false
local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', '(' .. int(now), 'WITHSCORES')
for k = 1, #gone, 2 do
  local member = gone[k]
  redis.call('ZREM', expiry, member)
  redis.call('HDEL', members, member)
  redis.call('ZADD', departed, gone[k + 1], member)
  changed = true
end
if changed then
  redis.call('ZREMRANGEBYSCORE', departed, '-inf', '(' .. int(now - DEPARTED_KEPT * ttl))
end

local i = 11
local count = tonumber(ARGV[i])
i = i + 1
local hold_until = tonumber(redis.call('GET', hold) or '0')
if join and held > 0 and now + held > hold_until then
  hold_until = now + held
  redis.call('SET', hold, int(hold_until))
end
if join then
  local declared = {}
  for k = 1, count do declared[k] = ARGV[i + k - 1] end
  redis.call('ZADD', expiry, int(now + ttl), me)
  redis.call('HSET', members, me, cmsgpack.pack({identity, declared}))
  changed = true
elseif redis.call('ZSCORE', expiry, me) then
  redis.call('ZADD', expiry, 'XX', int(now + ttl), me)
  if drain then
    local info = cmsgpack.unpack(redis.call('HGET', members, me))
    if #info[2] > 0 then
      redis.call('HSET', members, me, cmsgpack.pack({info[1], {}}))
      changed = true
    end
  end
else
  if changed then
    redis.call('INCR', members_revision)
    redis.call('PUBLISH', channel, me)
  end
  return {0, now}
end
i = i + count

local announce = false
local ledgers = cjson.decode(ARGV[i])
i = i + 1
for _, ledger in ipairs(ledgers) do
  local unit, token, running = ledger[1], ledger[2], ledger[3] == 1
  local ago, cooler = ledger[4], ledger[5]
  local r = load(unit)
  if r and r[1] == me and r[2] == token then
    r[4] = running and 1 or 0
    if cooler >= 0 then r[7] = cooler end
    if ago >= 0 then
      r[5] = now - ago
      r[6] = r[5] + r[7]
    end
    save(unit, r)
  end
end

count = tonumber(ARGV[i])
i = i + 1
for _ = 1, count do
  local unit, token, heir = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  i = i + 3
  local r = load(unit)
  if r and r[1] == me and r[2] == token then
    r[3] = fresh()
    if heir ~= '' and heir ~= me and redis.call('ZSCORE', expiry, heir) then
      r[1] = heir
      r[2] = r[3]
      if hold_until > now then r[6] = math.max(r[6], hold_until) end
    else
      r[1] = ''
    end
    save(unit, r)
    announce = true
  end
end

local claimed = {}
count = tonumber(ARGV[i])
i = i + 1
for _ = 1, count do
  local unit, observed, cooler = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local r = load(unit) or {'', 0, 0, 0, -1, -1, 0}
  local owner = r[1]
  if r[2] == observed
    and (owner == '' or owner == me or not redis.call('ZSCORE', expiry, owner)) then
    if r[4] == 1 or (owner ~= '' and r[6] <= now) then
      local since = owner ~= '' and redis.call('ZSCORE', departed, owner)
      since = (since and math.min(now, tonumber(since)) or now) + math.min(1000000, ttl / 10)
      r[6] = math.max(r[6], since + math.max(r[7], cooler))
    end
    if hold_until > now then r[6] = math.max(r[6], hold_until) end
    r[1] = me
    r[2] = fresh()
    r[3] = r[2]
    r[4] = 0
    save(unit, r)
    claimed[#claimed + 1] = unit
    claimed[#claimed + 1] = r[2]
  end
end

if leave then
  redis.call('ZREM', expiry, me)
  redis.call('HDEL', members, me)
  changed = true
end
local revision = tonumber(redis.call('GET', members_revision) or '0')
if changed then revision = redis.call('INCR', members_revision) end
if changed or announce then redis.call('PUBLISH', channel, me) end

local listed, listing = 0, {}
if revision ~= known_members then
  listed = 1
  local all = redis.call('HGETALL', members)
  for k = 1, #all, 2 do
    local info = cmsgpack.unpack(all[k + 1])
    listing[#listing + 1] = {all[k], info[1], info[2]}
  end
end
local records = {}
for _, unit in ipairs(redis.call('ZRANGEBYSCORE', revisions, '(' .. int(known_records), '+inf')) do
  local r = load(unit)
  if r then
    for _, value in ipairs({unit, r[1], r[2], r[3], r[4], r[5], r[6], r[7]}) do
      records[#records + 1] = value
    end
  end
end
return {1, now, revision, listed, listing, records, claimed}
""".replace("DEPARTED_KEPT", str(DEPARTED_KEPT))
"""One sync (the rules are in ``workit.lease._store``)."""

_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

READ = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local listing = {}
local all = redis.call('HGETALL', KEYS[1])
for k = 1, #all, 2 do
  local info = cmsgpack.unpack(all[k + 1])
  local expires = redis.call('ZSCORE', KEYS[2], all[k])
  if expires then listing[#listing + 1] = {all[k], info[1], info[2], expires} end
end
local records = {}
local units = redis.call('HGETALL', KEYS[3])
for k = 1, #units, 2 do
  local r = cmsgpack.unpack(units[k + 1])
  for _, value in ipairs({units[k], r[1], r[2], r[3], r[4], r[5], r[6], r[7]}) do
    records[#records + 1] = value
  end
end
return {now, listing, records}
"""
"""A read of a group's members (with their expiry) and records, changing nothing."""
_KEYS = (
    *("members", "expiry", "units", "revisions", "counter", "members-revision", "hold"),
    "departed",
)


def keys(group: str) -> tuple[str, ...]:
    """The keys of ``group``, in the order the script takes them."""
    return tuple(f"workit:{{{group}}}:{name}" for name in _KEYS)


def channel(group: str) -> str:
    """The pub/sub channel of ``group``'s announcements."""
    return f"workit:{{{group}}}:notices"


def _micro(value: float) -> int:
    return round(value * 1_000_000)


def _seconds(value: int) -> float | None:
    return None if value < 0 else value / 1_000_000


def _arguments(request: Request, notices: str) -> list[str | int]:
    units = request.units if request.join else ()
    arguments: list[str | int] = [
        request.member,
        request.identity,
        int(request.join),
        int(request.leave),
        _micro(request.ttl),
        request.known_members,
        request.known_records,
        notices,
        _micro(request.hold),
        int(request.drain),
        len(units),
        *units,
        # One argument for all: the client encodes each argument on its own, ~0.75 µs
        # apiece, and a busy replica sends one ledger per execution.
        json.dumps(
            [
                [
                    ledger.unit,
                    ledger.token,
                    int(ledger.running),
                    -1 if ledger.finished_ago is None else math.floor(ledger.finished_ago * 1e6),
                    -1 if ledger.cooler is None else math.ceil(ledger.cooler * 1e6),
                ]
                for ledger in request.ledgers
            ],
            separators=(",", ":"),
        ),
    ]
    arguments.append(len(request.releases))
    for hold in request.releases:
        arguments += [hold.unit, hold.token, hold.to]
    arguments.append(len(request.claims))
    for hold in request.claims:
        arguments += [hold.unit, hold.token, _micro(hold.cooler)]
    return arguments


def _records(flat: list[Any]) -> tuple[Record, ...]:
    return tuple(
        Record(
            unit=flat[k],
            owner=flat[k + 1],
            token=int(flat[k + 2]),
            revision=int(flat[k + 3]),
            running=flat[k + 4] == 1,
            last_finished=_seconds(flat[k + 5]),
            next_due=_seconds(flat[k + 6]),
            cooler=flat[k + 7] / 1_000_000,
        )
        for k in range(0, len(flat), 8)
    )


def _reply(raw: list[Any]) -> Reply:
    now = raw[1] / 1_000_000
    if raw[0] != 1:
        return Reply(alive=False, now=now)
    members = None
    if raw[3] == 1:
        members = tuple(
            Member(member=str(entry[0]), identity=str(entry[1]), units=tuple(entry[2]))
            for entry in raw[4]
        )
    records = _records(raw[5])
    granted = raw[6]
    claimed = tuple(
        Hold(unit=granted[k], token=int(granted[k + 1])) for k in range(0, len(granted), 2)
    )
    return Reply(
        alive=True,
        now=now,
        members_revision=int(raw[2]),
        members=members,
        records=records,
        claimed=claimed,
    )


LISTEN_TIMEOUT = 60.0
"""Seconds a wait for a notice lasts before the listener looks again. Each wait that
ends without one costs the client's timeout machinery, so waits are long: a notice
arrives whenever it comes, and cancelling the listener ends a wait at once."""


class _RedisStore:
    """One member's connections: commands, and a pub/sub subscription."""

    def __init__(self, url: str, group: str, timeout: float) -> None:
        _require_asyncio()
        self._client = redis_asyncio.Redis.from_url(
            url,
            decode_responses=True,
            # Shorter than the sync's own bound (``timeout``, ``Settings.sync_timeout``): the
            # client gives up on a silent connection first and drops it, cleanly.
            socket_timeout=timeout * 0.8,
            socket_connect_timeout=timeout * 0.8,
            retry=Retry(NoBackoff(), 0),
        )
        self._keys = keys(group)
        self._channel = channel(group)
        self._loaded = False

    async def sync(self, request: Request) -> Reply:
        arguments = _arguments(request, self._channel)
        if not self._loaded:
            await self._client.script_load(SCRIPT)
            self._loaded = True
        try:
            raw = await self._client.evalsha(_SHA, len(self._keys), *self._keys, *arguments)
        except NoScriptError:
            await self._client.script_load(SCRIPT)
            raw = await self._client.evalsha(_SHA, len(self._keys), *self._keys, *arguments)
        return _reply(raw)

    async def listen(self, wake: Callable[[str], None]) -> None:
        subscription = self._client.pubsub()
        try:
            await subscription.subscribe(self._channel)
            while True:
                message = await subscription.get_message(
                    ignore_subscribe_messages=True, timeout=LISTEN_TIMEOUT
                )
                if message is not None and message.get("type") == "message":
                    wake(str(message["data"]))
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await subscription.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py

    async def aclose(self) -> None:
        await self._client.aclose()


def _require_asyncio() -> None:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "workit.lease.Redis runs on anyio's asyncio backend (redis-py is asyncio-only)"
        ) from None


class Redis(Configured):
    """A lease backend on a Redis server: the replicas sharing ``url`` and ``group`` are one fleet.

    ``url`` is a ``redis://`` or ``rediss://`` URL. ``ttl`` is how long a
    replica stays a member without renewing, ``renew`` how often it renews
    (default ``ttl / 5``; also the bound on one round trip, so a black-holed
    connection is noticed in time), ``identity`` this replica's name (default
    host, pid and a random suffix). Everything the fleet needs lives in keys
    under ``workit:{group}:``, made on first use; the server's clock is the
    only one compared. Runs on anyio's asyncio backend.
    """

    def __init__(
        self,
        url: str,
        *,
        group: str,
        ttl: Duration = 15,
        renew: Duration | None = None,
        identity: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._url = check_url(url, ("redis", "rediss"), "Redis")
        self._settings = settings(group=group, ttl=ttl, renew=renew, identity=identity, clock=clock)
        self._live = Live()

    @property
    def backend(self) -> str:
        """The server's URL without its password."""
        return redact(self._url)

    async def roster(self) -> Roster:
        """The group's live members and who owns which unit, read without joining.

        One script on the server that changes nothing, by the server's clock;
        raises a ``redis`` error when the server cannot be reached, or gives
        up after ``ttl`` without an answer (bound it with ``anyio.fail_after``
        to wait less). Runs on asyncio.
        """
        _require_asyncio()
        client = redis_asyncio.Redis.from_url(
            self._url,
            decode_responses=True,
            socket_timeout=self._settings.ttl,
            socket_connect_timeout=self._settings.ttl,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            raw = await client.eval(READ, 3, *keys(self._settings.group)[:3])
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await client.aclose()
        now = raw[0] / 1_000_000
        members = [
            (
                Member(member=str(entry[0]), identity=str(entry[1]), units=tuple(entry[2])),
                float(entry[3]) / 1_000_000,
            )
            for entry in raw[1]
        ]
        return build(
            group=self._settings.group,
            backend=self.backend,
            now=now,
            members=members,
            records=_records(raw[2]),
        )

    def membership(
        self, units: Sequence[str], *, engine: str, logger: logging.Logger
    ) -> Membership:
        """A membership declaring ``units`` for one run of ``engine``."""
        units = check_units(units)
        self._live.add(units, engine)
        return Membership(
            settings=self._settings,
            store=lambda: _RedisStore(self._url, self._settings.group, self._settings.sync_timeout),
            backend=self.backend,
            units=units,
            engine=engine,
            logger=logger,
            on_end=lambda: self._live.remove(units),
        )
