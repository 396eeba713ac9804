-- Runs the commands given in ARGV from position `first` on, each as <argc> <arg>..., in order.
local function run_commands(first)
  local i = first
  while i <= #ARGV do
    local argc = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + argc))
    i = i + argc + 1
  end
end
