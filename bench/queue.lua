-- queue.lua -- wrk script of bench/queue.sh: PUT /send transactions through chappe's egress.
-- SPDX-License-Identifier: ISC
--
-- Usage: wrk -t T -c C -s bench/queue.lua http://127.0.0.1:EGRESS -- SECRET ORIGIN DESTS TAG SIZE
--   SECRET  the homeserver's egress secret (Proxy-Authorization: Bearer SECRET)
--   ORIGIN  the homeserver's server_name (the X-Matrix origin)
--   DESTS   comma-separated destinations, e.g. localhost:4001,localhost:4002
--   TAG     txnId prefix, unique per wrk invocation
--   SIZE    kib: a ~1 KiB transaction (one m.room.message PDU, one typing EDU);
--           small: a ~210-byte transaction (one typing EDU, no PDU)
-- Every request is `PUT matrix-federation://DEST/_matrix/federation/v1/send/TXNID` with a new
-- txnId "TAG-THREAD-N" (N counts the thread's requests) and its own X-Matrix Authorization
-- naming ORIGIN and DEST: chappe checks that it parses and names them, not the signature, so one
-- fixed syntactically valid sig serves. Thread k sends its n-th request to destination
-- (k + n) mod #DESTS: every destination gets an equal share.
--
-- Environment (read when the script loads, in wrk's main state and in each thread's):
--   QUEUE_LUA_LIMIT  requests per thread (0 or unset: no limit, wrk -d ends the run). With a
--                    limit, a thread that has sent LIMIT distinct transactions sends its last
--                    one again (same txnId: chappe acknowledges it without storing it twice) and
--                    stops once LIMIT answers came back, so that exactly LIMIT distinct
--                    transactions per thread reach the queue; wrk itself then waits for -d or
--                    SIGINT (queue.sh sends it once every thread has stopped).
--   QUEUE_LUA_DONE   with a limit: the file a thread writes "TID OK OTHER" to when it stops
--                    (appended; OK = 200 answers, OTHER = any other status).

local body_kib = '{"origin":"hs.localhost","origin_server_ts":1732620001300,"pdus":[{"auth_events":['
    .. '"$Vg1-RWvyZpP_EI5DHBG64p-KamURb_ItXJ2SI9Cn-0o","$TyQwp64mf9TzftPyC4xnfFne4oTUXRsGJ1HE'
    .. 'IcnV5B4","$jxRzYqCPiUaQIYiqfiTd0oOcPYXixJVqwT8c-YQs25I"],"content":{"body":"Bonjour '
    .. 'à tous, la réunion de coordination interministérielle est déplacée à 15 h, salle Gam'
    .. 'betta. Merci de confirmer.","msgtype":"m.text"},"depth":4821,"hashes":{"sha256":"MBY'
    .. '5NcAC/E4SAJBsPTCpxJVrSvn23K7x60sfy4+6aec"},"origin":"hs.localhost","origin_server_t'
    .. 's":1732620001234,"prev_events":["$kphyg4y5z-ZXjhHwoyNDiu5a5_YdQUEtYttysl2sUgE"],"roo'
    .. 'm_id":"!QtykxKocfZaZOUrTwp:hs.localhost","sender":"@alice.martin:hs.localhost","si'
    .. 'gnatures":{"hs.localhost":{"ed25519:a_abc":"AHPsJm1PtK2/PRBKpxT58RAy/Yq22IKfxAtSyG9'
    .. 'khdeSjMLr1GRvP+PzdL4R2QW/S+J1+obziJ2CqffcXkHdMg"}},"type":"m.room.message","unsigned'
    .. '":{"age_ts":1732620001234}}],"edus":[{"edu_type":"m.typing","content":{"room_id":"!Q'
    .. 'tykxKocfZaZOUrTwp:hs.localhost","user_id":"@alice.martin:hs.localhost","typing":fa'
    .. 'lse}}]}'

local body_small = '{"origin":"hs.localhost","origin_server_ts":1732620001300,"pdus":[],"edus":[{'
    .. '"edu_type":"m.typing","content":{"room_id":"!QtykxKocfZaZOUrTwp:hs.localhost","user_id'
    .. '":"@alice.martin:hs.localhost","typing":true}}]}'

local sig = 'qaEaNSxch9TrIwCBz/mKYhvYGQ8X/yy2CNFOibtJ5OrvPZFk8m6/rNMe2W9aEHxliwholZ16b/68F9NDMhRz5g'

-- setup() runs in the main Lua state once per wrk thread: number the threads.
local nthreads = 0
function setup(thread)
    nthreads = nthreads + 1
    thread:set("tid", nthreads)
end

local limit = tonumber(os.getenv("QUEUE_LUA_LIMIT") or "0") or 0
local donefile = os.getenv("QUEUE_LUA_DONE")
local heads, tails = {}, {} -- per destination: the request up to the txnId, and after it
local ndest = 0
local prefix = "txn-"
local me = 0
local sent, answered, ok, other = 0, 0, 0, 0
local last = nil

function init(args)
    local secret, origin, dests, tag, size = args[1], args[2], args[3], args[4], args[5]
    if not (secret and origin and dests and tag) or (size ~= "kib" and size ~= "small") then
        error("usage: wrk ... -s queue.lua URL -- SECRET ORIGIN DESTS TAG kib|small")
    end
    local body = size == "kib" and body_kib or body_small
    me = tid or 1
    prefix = tag .. "-" .. me .. "-"
    for d in dests:gmatch("[^,]+") do
        ndest = ndest + 1
        heads[ndest] = "PUT matrix-federation://" .. d .. "/_matrix/federation/v1/send/"
        tails[ndest] = " HTTP/1.1\r\nHost: " .. d .. "\r\nProxy-Authorization: Bearer " .. secret
            .. '\r\nAuthorization: X-Matrix origin="' .. origin .. '",destination="' .. d
            .. '",key="ed25519:bench",sig="' .. sig .. '"\r\nContent-Type: application/json'
            .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
    end
    if ndest == 0 then
        error("queue.lua: no destination in " .. dests)
    end
end

-- wrk checks its request before starting: it parses what thread 1's request() returns first,
-- to count pipelined requests, and never sends it. Its parser (joyent http_parser) refuses a '-'
-- in a URL scheme, so that first call gets an origin-form stand-in.
local checked = false

function request()
    if not checked then
        checked = true
        if me == 1 then
            return "PUT /_matrix/federation/v1/send/wrk-check HTTP/1.1\r\nHost: localhost\r\n\r\n"
        end
    end
    if limit > 0 and sent >= limit then
        return last -- the same transaction again: acknowledged, not stored twice
    end
    sent = sent + 1
    local d = (me + sent) % ndest + 1
    last = heads[d] .. prefix .. sent .. tails[d]
    return last
end

if limit > 0 then
    -- defined only with a limit: wrk hands every answer to Lua when response() exists
    function response(status)
        answered = answered + 1
        if status == 200 then
            ok = ok + 1
        else
            other = other + 1
        end
        if answered == limit then
            if donefile then
                local f = io.open(donefile, "a")
                if f then
                    f:write(me .. " " .. ok .. " " .. other .. "\n")
                    f:close()
                end
            end
            wrk.thread:stop()
        end
    end
end
