-- send.lua -- wrk script: PUT /_matrix/federation/v1/send/<txnId> with a ~1 KiB transaction.
-- SPDX-License-Identifier: ISC
--
-- Usage: wrk -s bench/send.lua https://127.0.0.1:PORT -- [RUN_TAG]
-- Each request gets a new transaction id "<RUN_TAG>-<thread>-<n>" (n increments per request),
-- so no two requests of one bench share a txnId (Matrix deduplicates on origin + txnId).
-- The X-Matrix signature is syntactically valid (86 unpadded base64 chars = 64 bytes) but does
-- not verify: nginx and HAProxy do not check it, chappe answers 401 to every request. The
-- benches no longer run this script: bench/presign.py takes `local body` below (keep it one
-- '...' piece per line, no single quote inside, a blank line after it) and signs it with a key
-- chappe pins; bench/verify.lua sends those requests (proxy.sh's send workload, verify.sh).
-- bench/crypto.c carries a copy of the same body.

local body = '{"origin":"a.example.org","origin_server_ts":1732620001300,"pdus":[{"auth_events":["'
    .. '$Vg1-RWvyZpP_EI5DHBG64p-KamURb_ItXJ2SI9Cn-0o","$TyQwp64mf9TzftPyC4xnfFne4oTUXRsGJ1HE'
    .. 'IcnV5B4","$jxRzYqCPiUaQIYiqfiTd0oOcPYXixJVqwT8c-YQs25I"],"content":{"body":"Bonjour '
    .. 'à tous, la réunion de coordination interministérielle est déplacée à 15 h, salle Gam'
    .. 'betta. Merci de confirmer.","msgtype":"m.text"},"depth":4821,"hashes":{"sha256":"MBY'
    .. '5NcAC/E4SAJBsPTCpxJVrSvn23K7x60sfy4+6aec"},"origin":"a.example.org","origin_server_t'
    .. 's":1732620001234,"prev_events":["$kphyg4y5z-ZXjhHwoyNDiu5a5_YdQUEtYttysl2sUgE"],"roo'
    .. 'm_id":"!QtykxKocfZaZOUrTwp:a.example.org","sender":"@alice.martin:a.example.org","si'
    .. 'gnatures":{"a.example.org":{"ed25519:a_abc":"AHPsJm1PtK2/PRBKpxT58RAy/Yq22IKfxAtSyG9'
    .. 'khdeSjMLr1GRvP+PzdL4R2QW/S+J1+obziJ2CqffcXkHdMg"}},"type":"m.room.message","unsigned'
    .. '":{"age_ts":1732620001234}}],"edus":[{"edu_type":"m.typing","content":{"room_id":"!Q'
    .. 'tykxKocfZaZOUrTwp:a.example.org","user_id":"@alice.martin:a.example.org","typing":fa'
    .. 'lse}}]}'

local auth = 'X-Matrix origin="a.example.org",destination="localhost",key="ed25519:a_abc",'
    .. 'sig="qaEaNSxch9TrIwCBz/mKYhvYGQ8X/yy2CNFOibtJ5OrvPZFk8m6/'
    .. 'rNMe2W9aEHxliwholZ16b/68F9NDMhRz5g"'

-- setup() runs in the main Lua state once per wrk thread: number the threads.
local nthreads = 0
function setup(thread)
    nthreads = nthreads + 1
    thread:set("tid", nthreads)
end

local prefix = "txn"
local counter = 0

function init(args)
    local tag = args[1] or tostring(os.time())
    prefix = tag .. "-" .. tostring(tid or 0) .. "-"
    wrk.method = "PUT"
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = auth
end

function request()
    counter = counter + 1
    return wrk.format(nil, "/_matrix/federation/v1/send/" .. prefix .. counter)
end
