-- Appends an attempt (`entry`, a JSON object) to the record's `history`, a JSON array of at most
-- `keep` entries (the oldest go first). The entry already last (the same attempt, started at the
-- same time: a write sent again after its reply was lost) is not added twice. cjson is safe here:
-- the entries are our own strings and integers (times in ms fit its 14 digits).
local function append_history(record, entry, keep)
  local history = {}
  local raw = redis.call('HGET', record, 'history')
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then history = decoded end
  end
  local new = cjson.decode(entry)
  local last = history[#history]
  if type(last) == 'table' and last.attempt == new.attempt and last.startedAt == new.startedAt then
    return
  end
  history[#history + 1] = new
  local kept = {}
  for i = math.max(1, #history - keep + 1), #history do kept[#kept + 1] = history[i] end
  redis.call('HSET', record, 'history', cjson.encode(kept))
end
