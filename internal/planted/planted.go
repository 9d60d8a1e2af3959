// Package planted describes the planted-cluster MoE that tests of expert
// routing share: Vocab token ids in Groups groups of consecutive ids, a
// token of group g selecting experts 2g and 2g+1 in every one of Layers
// layers. cmd/node's gatekeeper test writes such a model and runs it on
// the GPU; swarm's routes tokens the same way without one.
package planted

import "math/rand/v2"

// The planted model's shape.
const (
	Layers = 16
	Vocab  = 64
	Groups = 4
)

// Sequence draws segs segments of run tokens each; every segment takes a
// random group other than the previous one and random tokens of it.
func Sequence(segs, run int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, 3))
	per := Vocab / Groups
	var ids []int
	g := -1
	for range segs {
		ng := rng.IntN(Groups - 1)
		if ng >= g && g >= 0 {
			ng++
		}
		g = ng
		for range run {
			ids = append(ids, g*per+rng.IntN(per))
		}
	}
	return ids
}
