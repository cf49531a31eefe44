-- wrk script for scripts/bench-ab --stream: the same request as bench.lua,
-- streamed ("stream": true); the URL's query sets the fake upstream's events
-- (chunks=, interval_ms=). wrk reads each whole streamed answer.
dofile("scripts/bench.lua")
wrk.body = '{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0}'
