-- verify.lua -- wrk script: pre-signed X-Matrix PUT /send requests, or the same bodies unsigned.
-- SPDX-License-Identifier: ISC
--
-- Usage: wrk -t T -s bench/verify.lua URL -- MODE REQUESTS BODY T
--   MODE      verified:   PUT <path of each line> with its Authorization: X-Matrix header
--             unverified: PUT /_matrix/federation/v1/3pid/onbind, no Authorization (a route
--                         chappe proxies without verifying), same body
--   REQUESTS  requests.tsv of bench/presign.py: one "PATH<TAB>AUTHORIZATION" line per request
--   BODY      body.json of bench/presign.py: the canonical body every request carries
--   T         wrk's thread count (-t): thread k takes lines k, k+T, k+2T, ...
-- Each thread formats its share of the requests once, in init() (before wrk starts its clock),
-- and then cycles through them: a run that sends more than N requests (N = lines in REQUESTS)
-- repeats them from the start, same txnId and signature (chappe keeps no replay state; the
-- upstream answers every one). Every wrk invocation starts again at each thread's first line.
-- The unverified mode builds the same number of strings, so that wrk walks as much memory in
-- both modes.

local nthreads = 0
function setup(thread)
    nthreads = nthreads + 1
    thread:set("tid", nthreads)
end

local reqs = {}
local count = 0
local i = 0

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

function init(args)
    local mode, file, bodyfile = args[1], args[2], args[3]
    local step = tonumber(args[4] or "1")
    if (mode ~= "verified" and mode ~= "unverified") or not file or not bodyfile or not step then
        error("usage: wrk ... -s verify.lua URL -- verified|unverified REQUESTS BODY THREADS")
    end
    local me = (tid or 1) - 1
    wrk.method = "PUT"
    wrk.body = slurp(bodyfile)
    wrk.headers["Content-Type"] = "application/json"
    local n = 0
    for line in io.lines(file) do
        if n % step == me then
            local path, auth = line:match("^([^\t]+)\t(.+)$")
            if path == nil then
                error("verify.lua: bad line " .. (n + 1) .. " in " .. file)
            end
            if mode == "verified" then
                wrk.headers["Authorization"] = auth
            else
                path = "/_matrix/federation/v1/3pid/onbind"
                wrk.headers["Authorization"] = nil
            end
            count = count + 1
            reqs[count] = wrk.format(nil, path)
        end
        n = n + 1
    end
    if count == 0 then
        error("verify.lua: no request for thread " .. (me + 1) .. " in " .. file)
    end
end

function request()
    i = i + 1
    if i > count then
        i = 1
    end
    return reqs[i]
end
