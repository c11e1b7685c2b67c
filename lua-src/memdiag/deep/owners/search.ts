import { Ctx, tick } from "../../base/context";
import { newHash } from "../../base/sort";

/**
 * The owner search on the reference graph: who owns each node, and through which
 * parent. Pure graph work (no memory is read), so it runs on any graph, a synthetic
 * one in the unit tests included.
 */
export interface OwnerGraph {
  /** node → the nodes it points at */
  edges: LuaTable<number, number[]>;
  /** node ids are below this */
  nodes: number;
  /** root hits: the node each points at and its kind (segment, cycle, connection pool, request pool, lua) */
  rootNode: number[];
  rootKind: string[];
  /** nodes 1 .. nPools are pools, and so are the nodes in latePool; the others are plain heap chunks */
  nPools: number;
  latePool: LuaTable<number, boolean>;
}

export interface OwnerSearch {
  /** node → the root hit (index into rootNode) that owns it */
  owner: LuaTable<number, number>;
  /** node → the node it was reached from (0: a root points at it) */
  parent: LuaTable<number, number>;
  /** alternative owners: root hits of a tier whose node another root of that tier reaches through the graph */
  altRoot: number[];
  /** how many pools each alternative reaches */
  altPools: number[];
  /** pool node → the alternatives (indexes into altRoot) that reach it within two hops */
  altOf: LuaTable<number, number[]>;
}

/** tier of a root kind: nginx and module data first, then connection/request pools, then Lua */
function tierOf(this: void, kind: string): number {
  return kind === "lua" ? 2 : kind === "connection pool" || kind === "request pool" ? 1 : 0;
}

export function searchOwners(ctx: Ctx, g: OwnerGraph): OwnerSearch {
  const edges = g.edges;
  const rootNode = g.rootNode;
  const nPools = g.nPools;
  const latePool = g.latePool;
  // BFS from the roots, tier by tier: what nginx's and the modules' own data (data
  // segments, configuration structs, the cycle pool) reach at any depth belongs to
  // them; connection/request pools, then Lua, only claim what is left. A stale word in
  // a request pool must not cut a module's chain of leaked pools in two.
  // sized for every node at once: growing them key by key rehashes inside slices
  /** node → the root hit (index into R's arrays) that owns it; names are made at the end */
  const owner = newHash<number, number>(g.nodes);
  const parent = newHash<number, number>(g.nodes);
  /** alternatives: root hits of a tier whose node another root of that tier reaches through the graph */
  const altNode: number[] = [];
  const altRoot: number[] = [];
  const altPools: number[] = [];
  let steps = 0;
  for (let tier = 0; tier <= 2; tier++) {
    // Within a tier, a root that holds the head of a chain wins over a root that points at
    // an interior member: conservative marking meets stale words (a .bss word left pointing
    // at memory that later became an old pool of some list), and seeding both at once would
    // give the stale word's node, and everything older in the list, to the stale word's
    // owner. So first a labelled BFS from all of the tier's roots: a root's node that is
    // reached from another root's part of the graph is interior (a cycle makes both
    // interior, and then neither is preferred). Heads seed first; interior roots claim
    // only what the heads left and are kept as alternatives of what they reach.
    const seeds: number[] = [];
    const label = newHash<number, number>(g.nodes);
    const seedOf = new LuaTable<number, number>();
    for (let j = 0; j < rootNode.length; j++) {
      if (tierOf(g.rootKind[j]) !== tier) continue;
      const node = rootNode[j];
      if (owner.get(node) !== undefined || seedOf.get(node) !== undefined) continue;
      seedOf.set(node, j);
      label.set(node, node);
      seeds.push(j);
    }
    const interior = new LuaTable<number, boolean>();
    if (seeds.length > 1) {
      // depth of each labelled node below its seed: a root's "entry" into the graph is its
      // node and what that node points at within two hops (a stale word often points at a
      // heap chunk that points at the pool: root → chunk → pool)
      const ldepth = newHash<number, number>(g.nodes);
      const q: number[] = [];
      for (const j of seeds) {
        q.push(rootNode[j]);
        ldepth.set(rootNode[j], 0);
      }
      let qi = 0;
      while (qi < q.length) {
        if (++steps % 256 === 0) tick(ctx);
        const n = q[qi++];
        const out = edges.get(n);
        if (out === undefined) continue;
        const ln = label.get(n)!;
        const dn = ldepth.get(n)!;
        for (const m of out) {
          if (owner.get(m) !== undefined) continue;
          const lm = label.get(m);
          if (lm === undefined) {
            label.set(m, ln);
            ldepth.set(m, dn + 1);
            q.push(m);
          } else if (lm !== ln && ldepth.get(m)! <= 2) interior.set(lm, true);
        }
      }
    }
    for (let pass = 0; pass < 2; pass++) {
      const queue: number[] = [];
      for (const j of seeds) {
        const node = rootNode[j];
        if ((interior.get(node) === true) === (pass === 0)) continue;
        // an interior root: an alternative owner of what it reaches
        if (pass === 1 && altNode.length < 256) {
          altNode.push(node);
          altRoot.push(j);
          altPools.push(0);
        }
        if (owner.get(node) !== undefined) continue;
        owner.set(node, j);
        parent.set(node, 0);
        queue.push(node);
      }
      let qi = 0;
      while (qi < queue.length) {
        if (++steps % 256 === 0) tick(ctx);
        const n = queue[qi++];
        const out = edges.get(n);
        if (out === undefined) continue;
        const o = owner.get(n)!;
        for (const m of out) {
          if (owner.get(m) === undefined) {
            owner.set(m, o);
            parent.set(m, n);
            queue.push(m);
          }
        }
      }
    }
  }
  // what each alternative root reaches (pools only), bounded; it is listed with the group
  // of the first pools on its way (its entry: within two hops, as above)
  const altOf = new LuaTable<number, number[]>();
  for (let a = 0; a < altNode.length; a++) {
    const seen = new LuaTable<number, number>();
    const q: number[] = [altNode[a]];
    seen.set(altNode[a], 0);
    let qi = 0;
    let np = 0;
    while (qi < q.length && q.length < 65536) {
      if (++steps % 256 === 0) tick(ctx);
      const n = q[qi++];
      const d = seen.get(n)!;
      if (n <= nPools || latePool.get(n) === true) {
        np++;
        if (d <= 2) {
          const l = altOf.get(n) ?? [];
          l.push(a);
          altOf.set(n, l);
        }
      }
      const out = edges.get(n);
      if (out === undefined) continue;
      for (const m of out) {
        if (seen.get(m) === undefined) {
          seen.set(m, d + 1);
          q.push(m);
        }
      }
    }
    altPools[a] = np;
  }

  return { owner, parent, altRoot, altPools, altOf };
}
