-- The list a job's id goes back to on a queue whose normal list is `queue_key`: its priority
-- level's (the message option `priority`; absent means normal).
local function priority_list(queue_key, message)
  if type(message) == 'table' and type(message['options']) == 'table' then
    local level = message['options']['priority']
    if level == 'high' then return queue_key .. '$HIGH' end
    if level == 'low' then return queue_key .. '$LOW' end
  end
  return queue_key
end
local function decoded(body)
  local ok, message = pcall(cjson.decode, body)
  if ok then return message end
  return nil
end
