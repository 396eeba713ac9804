-- Runs a list of commands atomically: one command to send and one reply to read for a whole
-- batch (a MULTI/EXEC has a reply per command, each parsed). ARGV: each command as <argc> <arg>...
run_commands(1)
return #ARGV
