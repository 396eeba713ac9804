-- Packs a record (a table of field -> value, as HGETALL gives them) into one JSON array, as
-- app/outcomes/packed.py reads it: the layout, then the values of its fields in their order, null
-- where absent, the absent ones at the end left off. Times go in as ms after `base` (the time the
-- job's id carries: a few digits instead of 13), other integers and JSON values (data, result,
-- history: written by our own code, always JSON) as they are, anything else as a JSON string.
local PACKED_FIELDS = {$PACKED_FIELDS}
local PACKED_KINDS = {$PACKED_KINDS}
local function is_integer(value)
  return string.match(value, '^%-?%d+$$') and not string.match(value, '^%-?0%d')
end
local function pack_record(fields, base)
  local parts, last = {'$LAYOUT'}, 1
  for i, name in ipairs(PACKED_FIELDS) do
    local value, part = fields[name], 'null'
    if value ~= nil then
      local kind = PACKED_KINDS[name]
      if kind == 't' and is_integer(value) then
        part = string.format('%d', tonumber(value) - base)
      elseif kind == 'i' and is_integer(value) then
        part = value
      elseif kind == 'j' then
        part = value
      else
        part = cjson.encode(value)
      end
      last = i + 1
    end
    parts[i + 1] = part
  end
  return '[' .. table.concat(parts, ',', 1, last) .. ']'
end
