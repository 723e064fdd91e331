"""Every Lua script the host runs on Redis: each decision that must be atomic across processes
(claim a container, reserve or retire a warm slot, admit a turn under a budget, claim a cron
run) is one script, so two processes never hand out one container twice or both take the
last room under a limit. Run only by the stores of :mod:`dockercc.storage` (the runner's own
write script lives with the runner, :mod:`dockercc.agent.runner`).
"""

from __future__ import annotations

# Every script decodes registry values through dec(): a value that is not a JSON object with
# the fields a script reads (a forged or corrupted record) is skipped, never fatal: one bad
# record must not break claims for every process (the host quarantines it, see
# ContainerPool.records).
_DEC = r"""
local function dec(raw)
  if type(raw) ~= 'string' then return nil end
  local ok, v = pcall(cjson.decode, raw)
  if not ok or type(v) ~= 'table' then return nil end
  if type(v.id) ~= 'string' or type(v.status) ~= 'string' or type(v.spec) ~= 'string' then
    return nil
  end
  if v.agent ~= nil and type(v.agent) ~= 'string' then return nil end
  if v.name ~= nil and type(v.name) ~= 'string' then return nil end
  return v
end
"""

CLAIM = _DEC + r"""
local containers, queue, tickets, counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local warm_prefix = ARGV[1]
local spec, agent, session = ARGV[2], ARGV[3], ARGV[4]
local max_total, max_per_agent = tonumber(ARGV[5]), tonumber(ARGV[6])
local owner, now, new_id, ticket = ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10]
local ticket_deadline, name = tonumber(ARGV[11]), ARGV[12]
-- the spec key of the warm-set key (`spec`): a warm container of the same spec pre-started
-- for other CLI arguments serves when its own set has none (the runner restarts its CLI)
local base = ARGV[13] or ''

-- drop tickets whose waiter went away
local tk = redis.call('HGETALL', tickets)
for i = 1, #tk, 2 do
  local ok, t = pcall(cjson.decode, tk[i+1])
  if not ok or type(t) ~= 'table' or type(t.deadline) ~= 'number' or t.deadline < now then
    redis.call('HDEL', tickets, tk[i]); redis.call('ZREM', queue, tk[i])
  end
end

local all = redis.call('HGETALL', containers)
local total = 0
local per_agent = {}
local other_warm = nil
local same_base = nil
for i = 1, #all, 2 do
  local rec = dec(all[i+1])
  total = total + 1
  if rec ~= nil and rec.agent ~= nil and rec.agent ~= '' then
    per_agent[rec.agent] = (per_agent[rec.agent] or 0) + 1
  end
  if rec ~= nil and rec.status == 'warm' and rec.spec ~= spec and other_warm == nil
     and rec.id == all[i] then
    other_warm = rec
  end
  if base ~= '' and rec ~= nil and rec.status == 'warm' and rec.spec ~= spec
     and rec.id == all[i] and same_base == nil
     and (rec.spec == base or string.sub(rec.spec, 1, #base + 1) == base .. '-') then
    same_base = rec
  end
end
local mine = per_agent[agent] or 0

local function wait(limit)
  if redis.call('ZSCORE', queue, ticket) == false then
    redis.call('ZADD', queue, redis.call('INCR', counter), ticket)
  end
  redis.call('HSET', tickets, ticket, cjson.encode({agent=agent, deadline=ticket_deadline}))
  return {'wait', limit, tostring(total), tostring(mine)}
end

if mine >= max_per_agent then return wait('maxPerAgent') end

-- fairness: an older waiter that could be served goes first
local my_score = redis.call('ZSCORE', queue, ticket)
local older
if my_score == false then
  older = redis.call('ZRANGE', queue, 0, -1)
else
  older = redis.call('ZRANGEBYSCORE', queue, '-inf', '(' .. my_score)
end
for _, t in ipairs(older) do
  local raw = redis.call('HGET', tickets, t)
  local ok, info = pcall(cjson.decode, raw or '')
  if ok and type(info) == 'table' and type(info.agent) == 'string' then
    if (per_agent[info.agent] or 0) < max_per_agent then return wait('queue') end
  end
end

local function served(kind, id, extra)
  redis.call('ZREM', queue, ticket); redis.call('HDEL', tickets, ticket)
  return {kind, id, extra or ''}
end

-- a warm container of this spec
while true do
  local id = redis.call('LPOP', warm_prefix .. spec)
  if not id then break end
  local raw = redis.call('HGET', containers, id)
  local rec = dec(raw)
  if rec ~= nil and rec.id == id then
    if rec.status == 'warm' then
      rec.status = 'busy'; rec.agent = agent; rec.session = session; rec.owner = owner
      rec.claimed = now
      redis.call('HSET', containers, id, cjson.encode(rec))
      return served('warm', id, rec.name)
    end
  end
end

-- a warm container of the same spec, pre-started for other arguments
if same_base ~= nil then
  redis.call('LREM', warm_prefix .. same_base.spec, 0, same_base.id)
  same_base.status = 'busy'; same_base.agent = agent; same_base.session = session
  same_base.owner = owner; same_base.claimed = now
  redis.call('HSET', containers, same_base.id, cjson.encode(same_base))
  return served('warm', same_base.id, same_base.name)
end

local function reserve()
  local rec = {id=new_id, name=name, spec=spec, agent=agent, session=session,
               status='creating', owner=owner, created=now, claimed=now, warm=false}
  redis.call('HSET', containers, new_id, cjson.encode(rec))
end

if total < max_total then
  reserve()
  return served('cold', new_id, '')
end

-- full, but a warm container of another spec can make room
if other_warm ~= nil then
  other_warm.status = 'stopping'
  redis.call('HSET', containers, other_warm.id, cjson.encode(other_warm))
  redis.call('LREM', warm_prefix .. other_warm.spec, 0, other_warm.id)
  reserve()
  return served('evict', new_id, other_warm.id)
end
return wait('maxTotal')
"""

RESERVE_WARM = _DEC + r"""
local containers, queue = KEYS[1], KEYS[2]
local spec, max_total, min_warm = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local owner, now, new_id, name = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
if redis.call('ZCARD', queue) > 0 then return false end
local all = redis.call('HGETALL', containers)
local total, warm = 0, 0
for i = 1, #all, 2 do
  local rec = dec(all[i+1])
  total = total + 1
  if rec ~= nil and rec.spec == spec and rec.warm and (rec.status == 'warm' or rec.status == 'creating') then
    warm = warm + 1
  end
end
if warm >= min_warm or total >= max_total then return false end
local rec = {id=new_id, name=name, spec=spec, agent='', session='', status='creating',
             owner=owner, created=now, warm=true}
redis.call('HSET', containers, new_id, cjson.encode(rec))
return new_id
"""

MARK_WARM = _DEC + r"""
local rec = dec(redis.call('HGET', KEYS[1], ARGV[1]))
if rec == nil then return 0 end
if rec.status ~= 'creating' then return 0 end
rec.status = 'warm'; rec.ready = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

# record one session's demand for a warm set; returns the arrivals within the window.
# KEYS[1] pool:demand; ARGV: set key, now, window ms, recipe JSON ('' = keep the stored one)
DEMAND = r"""
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local entry = nil
if raw then
  local ok, v = pcall(cjson.decode, raw)
  if ok and type(v) == 'table' and type(v.hits) == 'table' then entry = v end
end
if entry == nil then entry = {hits={}} end
local hits = {}
for _, t in ipairs(entry.hits) do
  if type(t) == 'number' and t > now - window then hits[#hits + 1] = t end
end
while #hits >= 16 do table.remove(hits, 1) end
hits[#hits + 1] = now
entry.hits = hits
entry.last = now
if ARGV[4] ~= '' then
  local ok, recipe = pcall(cjson.decode, ARGV[4])
  if ok and type(recipe) == 'table' then entry.recipe = recipe end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
-- entries nobody asked for within the window go
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, v = pcall(cjson.decode, all[i+1])
  if not ok or type(v) ~= 'table' or type(v.last) ~= 'number' or v.last <= now - window then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return #hits
"""

# take a warm container out of service (idle reaping, max age) unless someone claimed it
RETIRE_WARM = _DEC + r"""
local rec = dec(redis.call('HGET', KEYS[1], ARGV[1]))
if rec == nil then return 0 end
if rec.status ~= 'warm' then return 0 end
rec.status = 'stopping'
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
redis.call('LREM', KEYS[2], 0, ARGV[1])
return 1
"""

# move a record that failed validation aside, unless it changed since it was read
QUARANTINE = r"""
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], string.sub(ARGV[2], 1, 4096))
return 1
"""

# Budgets (see dockercc.budget). Admit one turn: under every limit, counting the ledger's spend
# in each window *and* the turns admitted but not settled (each held at the mean cost of the
# window's turns), or refuse naming the limit. Check and hold are one step, so two processes
# cannot both take the last room under a limit. A hold of an owner that stopped heartbeating
# (its process died) or older than its expiry is dropped here.
# KEYS: spend, cost, holds, owners. ARGV: now, hold id ('' = check only), agent, owner,
# stale_ms, hold_ms, then per limit: scope, window_ms, limit_usd, agent filter ('' = all).
# Returns {1, '', estimate} or {0, scope, spent, held}.
BUDGET_ADMIT = r"""
local spend, cost, holds, owners = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, hold_id, agent, owner = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local stale, hold_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local function num(x) return string.format('%.17g', x) end
local live = {}
local all = redis.call('HGETALL', holds)
for i = 1, #all, 2 do
  local ok, h = pcall(cjson.decode, all[i+1])
  local keep = false
  if ok and type(h) == 'table' and type(h.expires) == 'number' and h.expires >= now
      and type(h.usd) == 'number' and type(h.agent) == 'string' and type(h.owner) == 'string' then
    if h.owner == owner then
      keep = true
    else
      local hb = tonumber(redis.call('HGET', owners, h.owner) or '')
      keep = hb ~= nil and now - hb <= stale
    end
  end
  if keep then live[#live + 1] = h else redis.call('HDEL', holds, all[i]) end
end
local estimate = 0
for i = 7, #ARGV, 4 do
  local scope, window, limit, who = ARGV[i], tonumber(ARGV[i+1]), tonumber(ARGV[i+2]), ARGV[i+3]
  local spent, n = 0, 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', spend, now - window, '+inf')) do
    local raw = redis.call('HGET', cost, m)
    if raw then
      local ok, e = pcall(cjson.decode, raw)
      if ok and type(e) == 'table' and tonumber(e.usd) and (who == '' or e.agent == who) then
        spent = spent + tonumber(e.usd)
        n = n + 1
      end
    end
  end
  local held = 0
  for _, h in ipairs(live) do
    if who == '' or h.agent == who then held = held + h.usd end
  end
  if spent + held >= limit then return {0, scope, num(spent), num(held)} end
  if n > 0 and spent / n > estimate then estimate = spent / n end
end
if hold_id ~= '' then
  redis.call('HSET', holds, hold_id, cjson.encode({agent = agent, owner = owner,
    usd = estimate, expires = now + hold_ms}))
end
return {1, '', num(estimate)}
"""

# Settle an admitted turn: its hold goes and its cost (if any) enters the ledger, in one step
# (a hold is never counted together with the cost that replaced it). Idempotent: the ledger
# entry is keyed by session:seq (HSETNX / ZADD NX), so a replay counts nothing twice.
# KEYS: spend, cost, holds. ARGV: now, hold id, member ('' = release only), entry JSON, keep_ms.
BUDGET_SETTLE = r"""
redis.call('HDEL', KEYS[3], ARGV[2])
if ARGV[3] == '' then return 0 end
local added = redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, tonumber(ARGV[1]) - tonumber(ARGV[5]))
return added
"""


# -- the cron scheduler (dockercc.builtins.cron) --------------------------------------------

# claim one due run: move the job's score from the due time to the next run, atomically
CRON_CLAIM = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""
# record a run on a job that still exists (a deleted job stays deleted); ARGV[3] is
# 'start' (a run began), 'end' (it ended: counted) or 'skip' (a run that did not happen)
CRON_RECORD = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local ok, job = pcall(cjson.decode, raw)
if not ok or type(job) ~= 'table' then return 0 end
local run = cjson.decode(ARGV[2])
if ARGV[3] == 'skip' then
  job['last_skip'] = run
  job['skipped_count'] = (tonumber(job['skipped_count']) or 0) + 1
else
  job['last_run'] = run
  if ARGV[3] == 'end' then job['run_count'] = (tonumber(job['run_count']) or 0) + 1 end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(job))
return 1
"""


#: a loss reported by the host into a session's output, only while the session is registered
#: (a session closed on purpose meanwhile must not get its buffer and state back, without a
#: TTL, from a loss reported late)
#: KEYS: the session registry, the session's output buffer, output channel, state
#: ARGV: session id, envelope, buffer length, status, error
REPORT_EVENT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PUBLISH', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[4], 'status', ARGV[4], 'error', ARGV[5])
return 1
"""

#: a new session's id checked to be unused and the session registered, in one step (the
#: claim of a new session waits on it: one round trip instead of two)
#: KEYS: the session registry, the session's state, history, transcript, result, output buffer
#: ARGV: session id, registry record (JSON), tenant
REGISTER_NEW = """
if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]) > 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'tenant', ARGV[3])
return 1
"""
