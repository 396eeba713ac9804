-- The console's top errors: the newest ARGV[1] entries of a failed index (KEYS[1]) grouped by
-- the start of their error text. ARGV[2]: the job records' prefix.
-- Returns {how many entries were read, then text, count, text, count...} in first-seen order.
-- A text is its error up to the first line break after the first printable ASCII character
-- (leading ASCII whitespace left out): never shorter than its first line, which the caller takes.
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local prefix, counts, order = ARGV[2], {}, {}
for _, id in ipairs(ids) do
  local err = redis.call('HGET', prefix .. id, 'error')
  if err then
    local from = string.find(err, '%S') or (#err + 1)
    local printable = string.find(err, '[!-~]', from)
    local stop = printable and string.find(err, '[\r\n]', printable)
    local text = string.sub(err, from, stop and (stop - 1) or #err)
    if counts[text] then
      counts[text] = counts[text] + 1
    else
      counts[text] = 1
      order[#order + 1] = text
    end
  end
end
local out = {#ids}
for _, text in ipairs(order) do
  out[#out + 1] = text
  out[#out + 1] = counts[text]
end
return out
