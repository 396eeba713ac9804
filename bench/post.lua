-- wrk script: POST the body in the file named by BENCH_BODY, with the API key in BENCH_API_KEY.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("BENCH_API_KEY") or ""
