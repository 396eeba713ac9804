-- The console's job lists: walk an index newest first from a cursor, reading of each job only
-- the fields its filters need, until one match more than `want`, the index's end, or `budget`
-- entries examined. KEYS[1]: the index. ARGV: top, low (the score range), the cursor's score
-- ('' for none; the walk starts after the cursor, also among entries of its score), the cursor's
-- member, the queue ('' for any), the error text (ASCII-lowercased; '' for any), want (0: count
-- the matches only), budget, the job records' prefix.
-- Returns {examined, stop, matches, last score, last member, score and id of each match...}; stop: 0 the
-- range ends, 1 a match beyond `want` follows, 2 the budget ran out; last: the last entry examined
-- before the stop (where the next page or call starts), '' if none.
local index, top, low = KEYS[1], ARGV[1], ARGV[2]
local cut, cut_member = tonumber(ARGV[3]), ARGV[4]
local queue, needle = ARGV[5], ARGV[6]
local want, budget, prefix = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local by_error_only = queue == '' and needle ~= ''
local fold = string.find(needle, '%a') ~= nil -- without letters, case does not matter

-- Whether a sorts before b byte by byte, as a sorted set orders members of one score (Lua's own
-- comparison follows the server's collation locale).
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end

local out = {0, 0, 0, '', ''}
local examined, found = 0, 0
local function stop(how)
  out[1], out[2], out[3] = examined, how, found
  return out
end

local offset, chunk = 0, math.max(want + 1, 64)
while true do
  local rows = redis.call('ZREVRANGEBYSCORE', index, top, low, 'WITHSCORES', 'LIMIT', offset, chunk)
  offset = offset + #rows / 2
  for i = 1, #rows, 2 do
    local member, score = rows[i], rows[i + 1]
    if not (cut and tonumber(score) == cut and not before(member, cut_member)) then
      if examined == budget then
        return stop(2)
      end
      examined = examined + 1
      local kept, err
      if by_error_only then -- one field: an expired record has no error either
        err = redis.call('HGET', prefix .. member, 'error')
        kept = err
      else
        local values = redis.call('HMGET', prefix .. member, 'jobId', 'queue', 'error')
        kept, err = values[1] and (queue == '' or values[2] == queue), values[3]
      end
      if kept then -- else its record expired (passed over), or it is of another queue
        if needle == '' or (err and string.find(fold and string.lower(err) or err, needle, 1, true)) then
          if want > 0 and found == want then
            return stop(1)
          end
          found = found + 1
          if want > 0 then
            out[4 + 2 * found] = score
            out[5 + 2 * found] = member
          end
        end
      end
      out[4], out[5] = score, member
    end
  end
  if #rows / 2 < chunk then
    return stop(0)
  end
  chunk = math.min(chunk * 2, 1000)
end
