package locktable

import (
	"strings"
	"unsafe"
)

// nameOrder is a B-tree (every key once, in inner nodes too) of a shard's
// lock ids ordered by name, for listings (LOCKS) that seek to a name and
// read on in order: a seek costs O(log locks) name comparisons.
//
// Like the other records, its nodes are pointer-free and off the Go heap,
// and refer to each other by uint32 ids: leaves (which carry nearly every
// key) are 128 bytes, holding 10 to 31 keys, so the order costs about 6
// bytes per lock (measured at 1M: TestMemory_PerHeldLock). A library B-tree (github.com/google/btree,
// github.com/tidwall/btree) keeps its nodes on the Go heap, as pointers to
// slices: that memory counts toward the GC's pacing, which lets RSS reach
// twice the live heap, and would about double what the order costs per
// lock, against a per-lock memory target that the table just meets; their
// ordering function also cannot compare a stored id with a name that is
// not a lock's (the seek), but through a sentinel. Keys compare as the
// names' bytes, read from the shard's arena.
//
// Insertion and deletion are the classic ones (Cormen et al.): each
// descends once, splitting full nodes on the way down (insert) or making
// sure each node it enters has a key to spare (delete), so that every node
// but the root keeps btMinKeys to btMaxKeys keys. Caller holds the
// shard's mutex.
type nameOrder struct {
	leaves records[btLeaf]
	inner  records[btInner]
	root   uint32 // a leaf if height is 0; 0: empty
	height int    // levels below the root
}

// A node holds btMinKeys to btMaxKeys keys (the root: 1 to btMaxKeys).
// The minimum is below half (2×btMinKeys+1 ≤ btMaxKeys is what deletion
// needs) so that a split can leave a node two thirds full when names
// arrive in increasing order, as counters in names do: even splits would
// leave such a tree half full, forever.
const (
	btMaxKeys = 31
	btMinKeys = 10
)

// btLeaf is a node's keys: lock ids in name order. Freed records link
// through n (see records).
type btLeaf struct {
	n    uint32
	keys [btMaxKeys]uint32
}

// btInner is an inner node: keys, and the subtrees between them; kids[i]
// holds the names between keys[i-1] and keys[i].
type btInner struct {
	btLeaf
	kids [btMaxKeys + 1]uint32
}

// node returns the keys of node id at height h (0: a leaf).
func (o *nameOrder) node(id uint32, h int) *btLeaf {
	if h == 0 {
		return o.leaves.at(id)
	}
	return &o.inner.at(id).btLeaf
}

func (o *nameOrder) alloc(m *offheap, h int) uint32 {
	if h == 0 {
		return o.leaves.alloc(m)
	}
	return o.inner.alloc(m)
}

func (o *nameOrder) free(id uint32, h int) {
	if h == 0 {
		o.leaves.release(id)
	} else {
		o.inner.release(id)
	}
}

// keyName returns lock id's name as a view of the arena: compare it, do
// not keep it.
func keyName(sh *shard, id uint32) string {
	b := sh.nameBytes(id)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// search returns the number of keys of x whose names are below name, and
// whether the next one is name.
func search(sh *shard, x *btLeaf, name string) (int, bool) {
	lo, hi := 0, int(x.n)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if keyName(sh, x.keys[m]) < name {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < int(x.n) && keyName(sh, x.keys[lo]) == name
}

// insert adds lock id, whose name is not in the order yet.
func (o *nameOrder) insert(sh *shard, id uint32) {
	if o.root == 0 {
		o.root = o.leaves.alloc(sh.mem)
		o.height = 0
	}
	name := keyName(sh, id)
	if o.node(o.root, o.height).n == btMaxKeys {
		r := o.inner.alloc(sh.mem)
		o.inner.at(r).kids[0] = o.root
		o.root = r
		o.height++
		o.split(sh, r, 0, o.height-1, name)
	}
	x, h := o.root, o.height
	for {
		xk := o.node(x, h)
		i, _ := search(sh, xk, name)
		if h == 0 {
			copy(xk.keys[i+1:xk.n+1], xk.keys[i:xk.n])
			xk.keys[i] = id
			xk.n++
			return
		}
		in := o.inner.at(x)
		if o.node(in.kids[i], h-1).n == btMaxKeys {
			o.split(sh, x, i, h-1, name)
			if keyName(sh, in.keys[i]) < name {
				i++
			}
		}
		x, h = in.kids[i], h-1
	}
}

// split splits the full child i (at height h) of inner node x, which is
// not full, around one of its keys, which moves up into x: the one where
// name, about to be inserted, goes, as far as both sides keep btMinKeys.
// Names inserted in increasing order then fill each node to two thirds
// before the next one starts; random ones split it about in the middle.
func (o *nameOrder) split(sh *shard, x uint32, i, h int, name string) {
	z := o.alloc(sh.mem, h)
	in := o.inner.at(x)
	y := in.kids[i]
	yk, zk := o.node(y, h), o.node(z, h)
	pos, _ := search(sh, yk, name)
	left := min(max(pos, btMinKeys), btMaxKeys-1-btMinKeys) // keys y keeps
	right := btMaxKeys - 1 - left
	copy(zk.keys[:right], yk.keys[left+1:])
	zk.n = uint32(right)
	if h > 0 {
		yi, zi := o.inner.at(y), o.inner.at(z)
		copy(zi.kids[:right+1], yi.kids[left+1:])
		clear(yi.kids[left+1:])
	}
	mid := yk.keys[left]
	clear(yk.keys[left:])
	yk.n = uint32(left)
	copy(in.keys[i+1:in.n+1], in.keys[i:in.n])
	copy(in.kids[i+2:in.n+2], in.kids[i+1:in.n+1])
	in.keys[i] = mid
	in.kids[i+1] = z
	in.n++
}

// delete takes lock id, which is in the order, out of it.
func (o *nameOrder) delete(sh *shard, id uint32) {
	name := keyName(sh, id)
	x, h := o.root, o.height
	for {
		xk := o.node(x, h)
		i, found := search(sh, xk, name)
		if h == 0 {
			// found: the descent kept every key on its way.
			copy(xk.keys[i:], xk.keys[i+1:xk.n])
			xk.n--
			xk.keys[xk.n] = 0
			break
		}
		in := o.inner.at(x)
		if found {
			y, z := in.kids[i], in.kids[i+1]
			switch {
			case o.node(y, h-1).n > btMinKeys:
				// Replace the key by its predecessor, then delete that.
				p := o.last(y, h-1)
				in.keys[i] = p
				name = keyName(sh, p)
				x, h = y, h-1
			case o.node(z, h-1).n > btMinKeys:
				s := o.first(z, h-1)
				in.keys[i] = s
				name = keyName(sh, s)
				x, h = z, h-1
			default:
				o.merge(x, i, h-1)
				x, h = y, h-1
			}
			continue
		}
		c := in.kids[i]
		if o.node(c, h-1).n == btMinKeys {
			c = o.fill(x, i, h-1)
		}
		x, h = c, h-1
	}
	// A root left without keys gives way to its only child, if any.
	if old := o.root; o.node(old, o.height).n == 0 {
		if o.height == 0 {
			o.root = 0
			o.leaves.release(old)
			return
		}
		o.root = o.inner.at(old).kids[0]
		o.height--
		o.inner.release(old)
	}
}

// last and first return the greatest and least key of the subtree x at
// height h.
func (o *nameOrder) last(x uint32, h int) uint32 {
	for ; h > 0; h-- {
		in := o.inner.at(x)
		x = in.kids[in.n]
	}
	l := o.leaves.at(x)
	return l.keys[l.n-1]
}

func (o *nameOrder) first(x uint32, h int) uint32 {
	for ; h > 0; h-- {
		x = o.inner.at(x).kids[0]
	}
	return o.leaves.at(x).keys[0]
}

// fill gives child i (at height h) of x, which has btMinKeys keys, one
// more: from a sibling that can spare one, through x, or by merging with a
// sibling. It returns the node that now holds child i's keys.
func (o *nameOrder) fill(x uint32, i, h int) uint32 {
	in := o.inner.at(x)
	c := in.kids[i]
	ck := o.node(c, h)
	if i > 0 {
		if l := in.kids[i-1]; o.node(l, h).n > btMinKeys {
			// Rotate right: x's key i-1 comes down, l's last goes up.
			lk := o.node(l, h)
			copy(ck.keys[1:ck.n+1], ck.keys[:ck.n])
			ck.keys[0] = in.keys[i-1]
			in.keys[i-1] = lk.keys[lk.n-1]
			lk.keys[lk.n-1] = 0
			if h > 0 {
				ci, li := o.inner.at(c), o.inner.at(l)
				copy(ci.kids[1:ck.n+2], ci.kids[:ck.n+1])
				ci.kids[0] = li.kids[lk.n]
				li.kids[lk.n] = 0
			}
			lk.n--
			ck.n++
			return c
		}
	}
	if i < int(in.n) {
		if r := in.kids[i+1]; o.node(r, h).n > btMinKeys {
			// Rotate left: x's key i comes down, r's first goes up.
			rk := o.node(r, h)
			ck.keys[ck.n] = in.keys[i]
			in.keys[i] = rk.keys[0]
			if h > 0 {
				ci, ri := o.inner.at(c), o.inner.at(r)
				ci.kids[ck.n+1] = ri.kids[0]
				copy(ri.kids[:rk.n], ri.kids[1:rk.n+1])
				ri.kids[rk.n] = 0
			}
			copy(rk.keys[:rk.n-1], rk.keys[1:rk.n])
			rk.n--
			rk.keys[rk.n] = 0
			ck.n++
			return c
		}
		o.merge(x, i, h)
		return c
	}
	o.merge(x, i-1, h)
	return in.kids[i-1]
}

// merge merges child i+1 of x and x's key i into child i (children at
// height h, both with btMinKeys keys), and frees child i+1.
func (o *nameOrder) merge(x uint32, i, h int) {
	in := o.inner.at(x)
	y, z := in.kids[i], in.kids[i+1]
	yk, zk := o.node(y, h), o.node(z, h)
	yk.keys[yk.n] = in.keys[i]
	copy(yk.keys[yk.n+1:], zk.keys[:zk.n])
	if h > 0 {
		copy(o.inner.at(y).kids[yk.n+1:], o.inner.at(z).kids[:zk.n+1])
	}
	yk.n += zk.n + 1
	copy(in.keys[i:], in.keys[i+1:in.n])
	copy(in.kids[i+1:], in.kids[i+2:in.n+1])
	in.n--
	in.keys[in.n] = 0
	in.kids[in.n+1] = 0
	o.free(z, h)
}

// seek returns the lock with the least name above from (or equal to it,
// if inclusive), or 0 if there is none.
func (o *nameOrder) seek(sh *shard, from string, inclusive bool) uint32 {
	var best uint32
	x, h := o.root, o.height
	if x == 0 {
		return 0
	}
	for {
		xk := o.node(x, h)
		i, found := search(sh, xk, from)
		if found {
			if inclusive {
				return xk.keys[i]
			}
			i++
		}
		if i < int(xk.n) {
			best = xk.keys[i]
		}
		if h == 0 {
			return best
		}
		x, h = o.inner.at(x).kids[i], h-1
	}
}

// hasPrefix reports whether lock id's name starts with prefix.
func hasPrefix(sh *shard, id uint32, prefix string) bool {
	return strings.HasPrefix(keyName(sh, id), prefix)
}
