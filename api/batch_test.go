//go:build cgo || js

package api

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
)

// TestBatchedCompletions: concurrent /v1/completions requests (different
// prompts, lengths and samplers) decode in one batch and get the texts
// they get one at a time; a server with Batch 1 runs them one at a time.
func TestBatchedCompletions(t *testing.T) {
	bodies := []string{
		`{"prompt":"Once upon a time","max_tokens":24,"temperature":0}`,
		`{"prompt":"The dog","max_tokens":9,"temperature":0}`,
		`{"prompt":"Lily saw a big red ball in the park and","max_tokens":16,"temperature":0.8,"seed":3}`,
		`{"prompt":"One day","max_tokens":20,"temperature":0,"stop":["."]}`,
	}
	text := func(t *testing.T, ts *testServer, body string) string {
		t.Helper()
		code, b := ts.post(t, "/v1/completions", body)
		var r struct {
			Choices []struct {
				Text         string `json:"text"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
		}
		if code != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
			t.Errorf("%s: %d %s", body, code, b)
			return ""
		}
		return r.Choices[0].Text + "|" + r.Choices[0].FinishReason
	}
	for _, batch := range []int{4, 1} {
		t.Run(fmt.Sprint("batch", batch), func(t *testing.T) {
			ts := startServer(t, func(o *Options) { o.Batch = batch })
			m := ts.list()[0]
			if len(m.sess) != batch || (m.batch != nil) != (batch > 1) {
				t.Fatalf("%d sessions, batch %v; want %d", len(m.sess), m.batch != nil, batch)
			}
			alone := make([]string, len(bodies))
			for i, b := range bodies {
				alone[i] = text(t, ts, b)
			}
			got := make([]string, len(bodies))
			var wg sync.WaitGroup
			for i, b := range bodies {
				wg.Go(func() { got[i] = text(t, ts, b) })
			}
			wg.Wait()
			for i := range bodies {
				if got[i] != alone[i] {
					t.Errorf("%s: together %q, alone %q", bodies[i], got[i], alone[i])
				}
			}
			if m.batch != nil {
				if st := m.batch.Stats(); st.Rows <= st.Steps {
					t.Errorf("batch stats %+v: no step advanced two requests", st)
				}
			}
		})
	}
}
