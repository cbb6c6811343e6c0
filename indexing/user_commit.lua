-- Apply one batch of user events atomically (indexing.redis_state.RedisState.commit).
--
-- KEYS and ARGV are named sections (indexing/script_sections.py): ARGV[1] is a JSON header naming, for each
-- section, its fields, its first key, its first argument and the number of records of each of its keys.
--
--   section      key                   fields                        records per key
--   fences       fence of a partition  expected, new                 1  (expected: -1 when there was none)
--   states       user state            state, expected_digest        1  (expected_digest: sha1 hex, "" = absent,
--                                                                        "-" = not checked)
--   seen         seen set of a user    score, member                 the batch's seen items
--   engaged      engaged set of a user score, member                 the batch's positive actions
--   parked       parked set            offset                        offsets this batch parks
--   claims       parked set            offset                        parked offsets this batch resolves
--   popularity   popularity of space   increment, member             the items' weights to add
--
-- params: seen_cap, the size the seen and engaged sets are trimmed to (newest kept). The fields of seen, engaged,
-- parked and claims are in the order their commands take them (ZADD score member, SADD member): a key's records
-- are passed as they lie.
--
-- Nothing is written unless every fence, every checked state and every claimed offset is still what the batch
-- was computed from; the reply is then 'OK', else 'FENCE_MOVED', 'STATE_MOVED' or 'PARK_MOVED'.

local header = cjson.decode(ARGV[1])
if header.format ~= 1 then
  return redis.error_reply('user commit: unknown sections format ' .. tostring(header.format))
end

-- Section `name`: its keys, each {key, first = ARGV index of its first record, n = its record count}, and the
-- offset of each field within a record (ARGV[g.first + (r - 1) * #fields + FIELD.name] is record r's value).
local function section(name, fields)
  local s = header.sections[name]
  if s == nil then
    error('user commit: no section ' .. name)
  end
  if table.concat(s.fields, ',') ~= table.concat(fields, ',') then
    error('user commit: section ' .. name .. ' has fields ' .. table.concat(s.fields, ','))
  end
  local offset = {}
  for f, field in ipairs(fields) do offset[field] = f - 1 end
  local groups, a = {}, s.arg
  for i, n in ipairs(s.counts) do
    groups[i] = {key = KEYS[s.key + i - 1], first = a, n = n}
    a = a + n * #fields
  end
  return groups, offset
end

-- `cmd key <all the records of g>`, in calls of at most 1000 records (Lua's unpack limit): records whose fields
-- are the command's arguments in order (ZADD score member, SADD member).
local function call_with_records(cmd, g, width)
  local last = g.first + g.n * width - 1
  local replies = {}
  for a = g.first, last, 1000 * width do
    local reply = redis.call(cmd, g.key, unpack(ARGV, a, math.min(a + 1000 * width - 1, last)))
    replies[#replies + 1] = reply
  end
  return replies
end

local fences, FENCE = section('fences', {'expected', 'new'})
local states, STATE = section('states', {'state', 'expected_digest'})
local seen = section('seen', {'score', 'member'})
local engaged = section('engaged', {'score', 'member'})
local parked = section('parked', {'offset'})
local claims = section('claims', {'offset'})
local popularity, POP = section('popularity', {'increment', 'member'})
local seen_cap = tonumber(header.params.seen_cap)

-- compare: everything the batch was computed from
for _, g in ipairs(fences) do
  local cur = redis.call('GET', g.key)
  if (cur and tonumber(cur) or -1) ~= tonumber(ARGV[g.first + FENCE.expected]) then
    return 'FENCE_MOVED'
  end
end
for _, g in ipairs(states) do
  local want = ARGV[g.first + STATE.expected_digest]
  if want ~= '-' then
    local cur = redis.call('GET', g.key)
    if (cur and redis.sha1hex(cur) or '') ~= want then
      return 'STATE_MOVED'
    end
  end
end
for _, g in ipairs(claims) do
  for _, hits in ipairs(call_with_records('SMISMEMBER', g, 1)) do
    for _, hit in ipairs(hits) do
      if hit == 0 then
        return 'PARK_MOVED'
      end
    end
  end
end

-- set: the batch, all of it
for _, g in ipairs(fences) do redis.call('SET', g.key, ARGV[g.first + FENCE.new]) end
for _, g in ipairs(states) do redis.call('SET', g.key, ARGV[g.first + STATE.state]) end
for _, zsets in ipairs({seen, engaged}) do
  for _, g in ipairs(zsets) do
    call_with_records('ZADD', g, 2)
    redis.call('ZREMRANGEBYRANK', g.key, 0, -seen_cap - 1)
  end
end
for _, g in ipairs(parked) do call_with_records('SADD', g, 1) end
for _, g in ipairs(claims) do call_with_records('SREM', g, 1) end
for _, g in ipairs(popularity) do
  for a = g.first, g.first + 2 * (g.n - 1), 2 do
    redis.call('ZINCRBY', g.key, ARGV[a + POP.increment], ARGV[a + POP.member])
  end
end
return 'OK'
