package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// printTable reads the summary.json of several runs, given as
// "label=path" arguments, and prints one Markdown table with a row per run
// and the per-program BPF cost of the first run that has it: the table the
// README carries. A label may name several runs ("label=p1,p2,..."): their
// rounds make one row, so that scenarios run in turn, one pair each (the
// storm and its floors, see bench/all.sh), are compared over the same
// stretch of the machine's drifting speed.
func printTable(w io.Writer, args []string) error {
	fmt.Fprintln(w, "| scenario | A refusals/s | B/A (median) | reported + lost | lost | summarized | tracer CPU (% of a core) | tracer CPU per refusal | max RSS | start-up |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	var progRounds []round
	progLabel := ""
	for _, arg := range args {
		label, path, ok := strings.Cut(arg, "=")
		if !ok {
			return fmt.Errorf("-table: want label=path/summary.json, got %q", arg)
		}
		var rounds []round
		var firsts []int // where each run's rounds start: no B pairs with another run's A
		for _, path := range strings.Split(path, ",") {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var rs []round
			if err := json.Unmarshal(data, &rs); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			firsts = append(firsts, len(rounds))
			rounds = append(rounds, rs...)
		}
		var aRates, ratios, starts []float64
		var cover = 2.0    // the worst round's (events+summarized+lost)/refusals
		accounted := false // the tracer wrote a stop record (mintracer does not)
		var lost, summarized, refusals uint64
		var cpu, seconds, rss float64
		var a *round
		for i := range rounds {
			r := &rounds[i]
			if slices.Contains(firsts, i) {
				a = nil
			}
			if r.Arm == "A" {
				a = r
				aRates = append(aRates, r.Load.RefusalsPerSec)
				continue
			}
			t := r.Tracer
			if t == nil || a == nil {
				continue
			}
			ratios = append(ratios, r.Load.RefusalsPerSec/a.Load.RefusalsPerSec)
			starts = append(starts, t.StartupS*1000)
			got := t.Refused
			if t.RefusedNetns != nil {
				got = *t.RefusedNetns
			}
			var l uint64
			if t.Lost != nil {
				l = *t.Lost
				accounted = true
			}
			if r.Load.Refusals > 0 {
				cover = min(cover, float64(got+t.Summarized+l)/float64(r.Load.Refusals))
			}
			lost += l
			summarized += t.Summarized
			refusals += r.Load.Refusals
			cpu += t.CPUUserS + t.CPUSysS
			seconds += r.Load.DurationS
			rss = max(rss, float64(t.MaxRSSKiB)/1024)
			if len(t.Progs) > 0 && progLabel == "" || progLabel == label {
				progLabel = label
				progRounds = append(progRounds, *r)
			}
		}
		perRefusal := "-"
		if refusals > 0 {
			perRefusal = fmt.Sprintf("%.2f µs", cpu*1e6/float64(refusals))
		}
		share := "-"
		if seconds > 0 {
			// Load time only: the tracer's start and stop are outside it,
			// so this overstates the share a little.
			share = fmt.Sprintf("%.0f%%", 100*cpu/seconds)
		}
		coverage := "-"
		if accounted {
			coverage = fmt.Sprintf("%.2f%%", 100*min(cover, 1))
		}
		fmt.Fprintf(w, "| %s | %.0f | %.3f | %s | %d | %d | %s | %s | %.1f MiB | %.0f ms |\n",
			label, median(aRates), median(ratios), coverage, lost, summarized, share, perRefusal, rss, median(starts))
	}
	if len(progRounds) == 0 {
		return nil
	}
	type agg struct{ cnt, ns uint64 }
	byName := map[string]*agg{}
	var names []string
	for _, r := range progRounds {
		for _, p := range r.Tracer.Progs {
			if byName[p.Name] == nil {
				byName[p.Name] = &agg{}
				names = append(names, p.Name)
			}
			byName[p.Name].cnt += p.RunCnt
			byName[p.Name].ns += p.RunTimeNs
		}
	}
	slices.Sort(names)
	fmt.Fprintf(w, "\nBPF programs during the B loads of %q (kernel.bpf_stats_enabled):\n\n", progLabel)
	fmt.Fprintln(w, "| program | runs | ns per run |")
	fmt.Fprintln(w, "| --- | ---: | ---: |")
	for _, n := range names {
		g := byName[n]
		if g.cnt == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %.0f |\n", n, g.cnt, float64(g.ns)/float64(g.cnt))
	}
	return nil
}
