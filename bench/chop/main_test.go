package main

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	// Ten ratios 0.90, 0.91, ..., 0.99 in a shuffled order.
	r := []float64{0.95, 0.90, 0.99, 0.93, 0.91, 0.97, 0.92, 0.96, 0.94, 0.98}
	got := summarize("x", r)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	// Sample standard deviation of 0.90..0.99 step 0.01: sqrt(82.5e-4/9).
	sd := math.Sqrt(0.00825 / 9)
	if got.Arm != "x" || got.Pairs != 10 || !near(got.Mean, 0.945) || !near(got.Median, 0.95) ||
		!near(got.P10, 0.91) || !near(got.P90, 0.99) || !near(got.CI95, 1.96*sd/math.Sqrt(10)) {
		t.Errorf("summarize = %+v", got)
	}
	if r[0] != 0.95 {
		t.Error("summarize sorted its argument")
	}
	one := summarize("y", []float64{0.8})
	if one.Pairs != 1 || one.Mean != 0.8 || one.Median != 0.8 || one.CI95 != 0 {
		t.Errorf("summarize of one = %+v", one)
	}
}
