import { runLua } from "../harness/lua";

/** The bounded ring in compiled Lua (build/lua/memdiag/push/queue.lua), driven from luajit. */
const PRE = `
local L = require("lualib_bundle")
local Ring = require("memdiag.push.queue").Ring
local OVER = require("memdiag.push.queue").ENTRY_OVERHEAD
local function new(c, b) return L.__TS__New(Ring, c, b) end
`;

describe("push queue (ring)", () => {
  test("count cap: oldest dropped and counted, order kept", () => {
    const r = runLua(`${PRE}
      local q = new(3, 1e9)
      local drops = {}
      for s = 1, 7 do drops[#drops + 1] = q:push(s, "x") end
      return { seqs = arr(q:seqs()), count = q.count, drops = arr(drops), pending = q.droppedPending, total = q.droppedTotal }`);
    expect(r.seqs).toEqual([5, 6, 7]);
    expect(r.count).toBe(3);
    expect(r.drops).toEqual([0, 0, 0, 1, 1, 1, 1]);
    expect(r.pending).toBe(4);
    expect(r.total).toBe(4);
  });

  test("byte cap: bytes accounted, oldest dropped until the new one fits; too big alone is dropped", () => {
    const r = runLua(`${PRE}
      local q = new(100, 3 * (100 + OVER))
      for s = 1, 3 do q:push(s, string.rep("a", 100)) end
      local full = q.bytes
      q:push(4, string.rep("b", 150))  -- needs two slots' worth: drops 1 and 2
      local after = arr(q:seqs())
      local d = q:push(5, string.rep("c", 10000))  -- larger than the whole cap
      return { full = full, after = after, bytes = q.bytes, d = d, seqs = arr(q:seqs()), total = q.droppedTotal, over = OVER }`);
    expect(r.full).toBe(3 * (100 + r.over));
    expect(r.after).toEqual([3, 4]);
    expect(r.bytes).toBe(100 + 150 + 2 * r.over);
    expect(r.d).toBe(1);
    expect(r.seqs).toEqual([3, 4]);
    expect(r.total).toBe(3);
  });

  test("entries leave only on ack; sends go in order; reconnect re-sends unacked", () => {
    const r = runLua(`${PRE}
      local q = new(10, 1e9)
      for s = 1, 4 do q:push(s, "x") end
      local order = {}
      for i = 1, 3 do local e = q:nextUnsent(); e.sent = true; order[#order + 1] = e.seq end
      local inflight = q:inflight()
      q:ack(1)
      local afterAck = arr(q:seqs())
      q:resetSent()              -- connection lost
      local again = q:nextUnsent().seq
      local unknown = q:ack(99)
      q:ack(3)                   -- out-of-order ack removes just that one
      return { order = arr(order), inflight = inflight, afterAck = afterAck, again = again,
               unknown = unknown == nil, seqs = arr(q:seqs()), count = q.count }`);
    expect(r.order).toEqual([1, 2, 3]);
    expect(r.inflight).toBe(3);
    expect(r.afterAck).toEqual([2, 3, 4]);
    expect(r.again).toBe(2);
    expect(r.unknown).toBe(true);
    expect(r.seqs).toEqual([2, 4]);
    expect(r.count).toBe(2);
  });

  test("dropped is announced once, and again if the announcing frame is dropped unacked", () => {
    const r = runLua(`${PRE}
      local q = new(2, 1e9)
      for s = 1, 4 do q:push(s, "x") end      -- 1 and 2 dropped
      local e = q:nextUnsent()               -- seq 3 goes out announcing 2 drops
      e.dropped = q:takeDropped(); e.sent = true
      local first = e.dropped
      local nowPending = q.droppedPending
      q:push(5, "x")                          -- drops seq 3 before its ack: 3 itself + its 2 announced
      local pending = q.droppedPending
      local e2 = q:nextUnsent()
      return { first = first, nowPending = nowPending, pending = pending, next = e2.seq, total = q.droppedTotal }`);
    expect(r.first).toBe(2);
    expect(r.nowPending).toBe(0);
    expect(r.pending).toBe(3);
    expect(r.next).toBe(4);
    expect(r.total).toBe(3);
  });

  test("a rejected entry is not a drop, but the drops it announced are announced again", () => {
    const r = runLua(`${PRE}
      local q = new(2, 1e9)
      for s = 1, 3 do q:push(s, "x") end      -- seq 1 dropped
      local e = q:nextUnsent(); e.dropped = q:takeDropped(); e.sent = true  -- seq 2 announces 1
      q:reject(2)
      return { pending = q.droppedPending, total = q.droppedTotal, seqs = arr(q:seqs()) }`);
    expect(r.pending).toBe(1);
    expect(r.total).toBe(1);
    expect(r.seqs).toEqual([3]);
  });

  test("memory stays bounded over 100k pushes (queue capped, Lua heap flat)", () => {
    const r = runLua(`${PRE}
      local q = new(50, 1e9)
      local payload = string.rep("z", 1000)
      for s = 1, 20000 do q:push(s, payload .. s) end
      collectgarbage(); collectgarbage()
      local kb1 = collectgarbage("count")
      for s = 20001, 100000 do q:push(s, payload .. s) end
      collectgarbage(); collectgarbage()
      local kb2 = collectgarbage("count")
      return { count = q.count, first = q:at(0).seq, last = q:at(49).seq, kb1 = kb1, kb2 = kb2, total = q.droppedTotal }`);
    expect(r.count).toBe(50);
    expect(r.first).toBe(99951);
    expect(r.last).toBe(100000);
    expect(r.total).toBe(100000 - 50);
    // the ring re-indexes as it moves; the heap must not grow with the number of pushes
    expect(r.kb2).toBeLessThan(r.kb1 * 1.5 + 64);
  });
});
