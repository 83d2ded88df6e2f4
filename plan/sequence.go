package plan

// Sequence returns the order in which paths take packets: weights are reduced by their gcd and spread by
// smooth weighted round-robin (as nginx balances upstreams), so 3:2 gives 0,1,0,1,0 and never 0,0,0,1,1.
// Blocks of one path hold back the others' segments and cost goodput to reordering; interleaving keeps
// every link busy with the smallest reorder distance. Ordering each path's slots by their virtual start or
// finish time instead was measured against this order and made no difference (README, Benchmarks). The
// result has sum(reduced weights) entries.
func Sequence(weights []int) []int {
	g := 0
	for _, w := range weights {
		g = gcd(g, w)
	}
	if g == 0 {
		return nil
	}
	total := 0
	reduced := make([]int, len(weights))
	for i, w := range weights {
		reduced[i] = w / g
		total += reduced[i]
	}
	current := make([]int, len(weights))
	seq := make([]int, 0, total)
	for range total {
		best := -1
		for i, w := range reduced {
			current[i] += w
			if w > 0 && (best < 0 || current[i] > current[best]) {
				best = i
			}
		}
		current[best] -= total
		seq = append(seq, best)
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
