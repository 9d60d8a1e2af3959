//go:build cgo || js

package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/internal/gputest"
	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/rdrr"
)

// golden is llama.cpp's greedy continuation of "Once upon a time" on
// stories260K (../shared/golden/stories260K.once.json).
type golden struct {
	PromptTokens []int  `json:"promptTokens"`
	Generated    []int  `json:"generated"`
	Text         string `json:"text"`
}

func loadGolden(t *testing.T) golden {
	t.Helper()
	b, err := os.ReadFile(testenv.Path(t, "golden/stories260K.once.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("golden: %v", err)
	}
	return g
}

// testServer is a Server serving stories260K on the test GPU adapter
// (lavapipe in CI) over loopback HTTP.
type testServer struct {
	*Server
	url string
	reg *prometheus.Registry
	id  string
}

// startServer converts stories260K, serves it and waits until it is ready;
// tune adjusts the options first.
func startServer(t *testing.T, tune func(*Options)) *testServer {
	t.Helper()
	_, rm := testmodel.Open(t, testenv.Path(t, "models/stories260K.gguf"), rdrr.WriterOptions{})
	dev := gputest.Open(t)
	reg := prometheus.NewRegistry()
	o := Options{
		Load: func(ctx context.Context, m *rdrr.Model) (*engine.Model, error) {
			return engine.Load(ctx, dev, m, engine.Options{Context: 256})
		},
		Registry: reg,
	}
	if tune != nil {
		tune(&o)
	}
	s := New(o)
	t.Cleanup(s.Close) // after the HTTP server's Close below
	s.Add(rm)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	if err := s.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &testServer{Server: s, url: hs.URL, reg: reg, id: rm.ID.String()}
}

func (ts *testServer) client(opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{option.WithBaseURL(ts.url + "/v1/"),
		option.WithAPIKey("unused"), option.WithMaxRetries(0)}, opts...)...)
}

// post sends body to path and returns the status and the body.
func (ts *testServer) post(t *testing.T, path, body string, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestCompletionsOpenAIClient(t *testing.T) {
	ts := startServer(t, nil)
	g := loadGolden(t)
	c := ts.client()
	ctx := context.Background()
	params := openai.CompletionNewParams{
		Model:       openai.CompletionNewParamsModel(ts.id),
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens:   openai.Int(16),
		Temperature: openai.Float(0),
	}
	res, err := c.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Choices) != 1 {
		t.Fatalf("%d choices", len(res.Choices))
	}
	text := res.Choices[0].Text
	if text == "" || !strings.HasPrefix(g.Text, text) {
		t.Fatalf("text %q is not a prefix of llama.cpp's %q", text, g.Text)
	}
	if got := string(res.Choices[0].FinishReason); got != "length" {
		t.Errorf("finish_reason %q, want length", got)
	}
	if res.Usage.PromptTokens != int64(len(g.PromptTokens)) || res.Usage.CompletionTokens != 16 || res.Usage.TotalTokens != res.Usage.PromptTokens+16 {
		t.Errorf("usage %+v, want %d prompt + 16 completion tokens", res.Usage, len(g.PromptTokens))
	}
	if res.Object != "text_completion" || res.Model != ts.id {
		t.Errorf("object %q model %q", res.Object, res.Model)
	}

	// Streamed, the deltas concatenate to the same text; include_usage
	// adds a last chunk with the usage and no choices.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	st := c.Completions.NewStreaming(ctx, params)
	var sb strings.Builder
	var chunks int
	var finish string
	var u openai.CompletionUsage
	for st.Next() {
		ch := st.Current()
		chunks++
		for _, c := range ch.Choices {
			sb.WriteString(c.Text)
			if c.FinishReason != "" {
				finish = string(c.FinishReason)
			}
		}
		if ch.Usage.TotalTokens > 0 {
			u = ch.Usage
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if sb.String() != text {
		t.Errorf("streamed %q, not streamed %q", sb.String(), text)
	}
	if chunks < 8 || finish != "length" || u.CompletionTokens != 16 {
		t.Errorf("%d chunks, finish %q, usage %+v: want a chunk per token, length, 16 tokens", chunks, finish, u)
	}

	// Token ids as the prompt: the golden's ids give the golden's tokens.
	ids := make([]int64, len(g.PromptTokens))
	for i, id := range g.PromptTokens {
		ids[i] = int64(id)
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	params.Prompt = openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: ids}
	if res, err = c.Completions.New(ctx, params); err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].Text != text {
		t.Errorf("token prompt gave %q, text prompt %q", res.Choices[0].Text, text)
	}
}

func TestStreamWire(t *testing.T) {
	ts := startServer(t, nil)
	body := fmt.Sprintf(`{"model":%q,"prompt":"Once upon a time","max_tokens":8,"temperature":0,"stream":true}`, ts.id[:12])
	req, _ := http.NewRequest("POST", ts.url+"/v1/completions", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("line %q is not a data event", line)
		}
		events = append(events, data)
	}
	if len(events) < 2 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q: want chunks then [DONE]", events)
	}
	for _, e := range events[:len(events)-1] {
		var c completionResponse
		if err := json.Unmarshal([]byte(e), &c); err != nil || c.Object != "text_completion" {
			t.Fatalf("event %q: %v", e, err)
		}
	}
}

func TestChatCompletions(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.client()
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model: ts.id,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("You tell short stories."),
			openai.UserMessage("Tell me about a dog."),
		},
		MaxCompletionTokens: openai.Int(24),
		Temperature:         openai.Float(0),
	}
	res, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Choices) != 1 || res.Choices[0].Message.Content == "" || res.Choices[0].Message.Role != "assistant" {
		t.Fatalf("choices %+v", res.Choices)
	}
	want := res.Choices[0].Message.Content
	st := c.Chat.Completions.NewStreaming(ctx, params)
	var sb strings.Builder
	for st.Next() {
		for _, ch := range st.Current().Choices {
			sb.WriteString(ch.Delta.Content)
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if sb.String() != want {
		t.Errorf("streamed %q, not streamed %q", sb.String(), want)
	}
}

func TestStop(t *testing.T) {
	ts := startServer(t, nil)
	g := loadGolden(t)
	// Stop at "girl": the reply is the golden text up to it.
	i := strings.Index(g.Text, "girl")
	if i < 0 {
		t.Fatal("golden text has no 'girl'")
	}
	for _, stream := range []bool{false, true} {
		c := ts.client()
		params := openai.CompletionNewParams{
			Model:       openai.CompletionNewParamsModel(ts.id),
			Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
			MaxTokens:   openai.Int(32),
			Temperature: openai.Float(0),
			Stop:        openai.CompletionNewParamsStopUnion{OfStringArray: []string{"zebra", "girl"}},
		}
		var text, finish string
		if stream {
			st := c.Completions.NewStreaming(context.Background(), params)
			for st.Next() {
				for _, ch := range st.Current().Choices {
					text += ch.Text
					if ch.FinishReason != "" {
						finish = string(ch.FinishReason)
					}
				}
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
		} else {
			res, err := c.Completions.New(context.Background(), params)
			if err != nil {
				t.Fatal(err)
			}
			text, finish = res.Choices[0].Text, string(res.Choices[0].FinishReason)
		}
		if text != g.Text[:i] || finish != "stop" {
			t.Errorf("stream %v: %q (%s), want %q (stop)", stream, text, finish, g.Text[:i])
		}
	}
}

func TestErrors(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MaxBody = 4096 })
	long := strings.Repeat("once upon a time ", 400) // over the 256-token context
	cases := []struct {
		name, path, body string
		code             int
		errCode          string
	}{
		{"malformed JSON", "/v1/completions", `{"prompt": "x",`, 400, "invalid_json"},
		{"unknown model", "/v1/completions", `{"model":"nope","prompt":"x"}`, 400, "model_not_found"},
		{"prompt over the context", "/v1/completions", fmt.Sprintf(`{"prompt":%q}`, long[:3000]), 400, "context_length_exceeded"},
		{"body over the limit", "/v1/completions", fmt.Sprintf(`{"prompt":%q}`, long), 413, "request_too_large"},
		{"bad temperature", "/v1/completions", `{"prompt":"x","temperature":-1}`, 400, "invalid_value"},
		{"n > 1", "/v1/completions", `{"prompt":"x","n":2}`, 400, "unsupported_parameter"},
		{"frequency penalty", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"frequency_penalty":0.5}`, 400, "unsupported_parameter"},
		{"no messages", "/v1/chat/completions", `{"messages":[]}`, 400, "invalid_messages"},
		{"bad role", "/v1/chat/completions", `{"messages":[{"role":"tool","content":"x"}]}`, 400, "invalid_messages"},
		{"token outside vocabulary", "/v1/completions", `{"prompt":[1,99999]}`, 400, "invalid_value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := ts.post(t, c.path, c.body)
			var e apiError
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" || e.Error.Code == nil {
				t.Fatalf("%d %s: not an OpenAI error object (%v)", code, body, err)
			}
			if code != c.code || *e.Error.Code != c.errCode {
				t.Errorf("%d %s: want %d with code %s", code, body, c.code, c.errCode)
			}
		})
	}
}

func TestAPIKey(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.APIKey = "sesame" })
	body := `{"prompt":"Once","max_tokens":2}`
	if code, b := ts.post(t, "/v1/completions", body); code != 401 {
		t.Errorf("no key: %d %s", code, b)
	}
	if code, b := ts.post(t, "/v1/completions", body, "Authorization", "Bearer wrong"); code != 401 {
		t.Errorf("wrong key: %d %s", code, b)
	}
	if code, b := ts.post(t, "/v1/completions", body, "Authorization", "Bearer sesame"); code != 200 {
		t.Errorf("right key: %d %s", code, b)
	}
	// The openai-go client sends the key it is given.
	withKey := ts.client(option.WithAPIKey("sesame"))
	if _, err := withKey.Completions.New(context.Background(), openai.CompletionNewParams{
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")}, MaxTokens: openai.Int(2),
	}); err != nil {
		t.Errorf("openai-go with the key: %v", err)
	}
	// Listing models and health need no key.
	for _, p := range []string{"/v1/models", "/health"} {
		resp, err := http.Get(ts.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
}

func TestModelsHealthMetrics(t *testing.T) {
	ts := startServer(t, nil)
	var list modelList
	getJSON(t, ts.url+"/v1/models", 200, &list)
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != ts.id || list.Data[0].Object != "model" ||
		list.Data[0].OwnedBy == "" || list.Data[0].Status != "ready" {
		t.Fatalf("/v1/models: %+v", list)
	}
	// The model field takes the ID, a unique prefix or the name.
	for _, name := range []string{ts.id, ts.id[:8], list.Data[0].Name} {
		if code, b := ts.post(t, "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"Once","max_tokens":3}`, name)); code != 200 {
			t.Errorf("model %q: %d %s", name, code, b)
		}
	}
	var h map[string]any
	getJSON(t, ts.url+"/health", 200, &h)
	if h["status"] != "ok" {
		t.Errorf("/health: %v", h)
	}
	if got := testutil.ToFloat64(ts.met.tokensOut.WithLabelValues(ts.id)); got != 9 {
		t.Errorf("doppler_tokens_generated_total %v, want 9", got)
	}
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"doppler_tokens_generated_total{model=", "doppler_time_to_first_token_seconds_bucket",
		`doppler_http_requests_total{code="200",endpoint="completions"} 3`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func getJSON(t *testing.T, url string, code int, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %d, want %d", url, resp.StatusCode, code)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestHealthWhileLoading: /health is 503 and generation 503 while the
// only model loads; both answer once it is ready.
func TestHealthWhileLoading(t *testing.T) {
	release := make(chan struct{})
	ts := &testServer{}
	_, rm := testmodel.Open(t, testenv.Path(t, "models/stories260K.gguf"), rdrr.WriterOptions{})
	dev := gputest.Open(t)
	s := New(Options{Load: func(ctx context.Context, m *rdrr.Model) (*engine.Model, error) {
		<-release // the weights take their time
		return engine.Load(ctx, dev, m, engine.Options{Context: 128})
	}})
	t.Cleanup(s.Close)
	s.Add(rm)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	ts.Server, ts.url = s, hs.URL
	var h map[string]any
	getJSON(t, hs.URL+"/health", 503, &h)
	if h["status"] != "loading" {
		t.Errorf("/health while loading: %v", h)
	}
	if code, b := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":2}`); code != 503 || !strings.Contains(string(b), "model_loading") {
		t.Errorf("completion while loading: %d %s", code, b)
	}
	close(release)
	if err := s.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	getJSON(t, hs.URL+"/health", 200, &h)
	if code, b := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":2}`); code != 200 {
		t.Errorf("completion once ready: %d %s", code, b)
	}
}

// TestConcurrent: requests at once each get the tokens they get alone.
func TestConcurrent(t *testing.T) {
	ts := startServer(t, nil)
	prompts := []string{"Once upon a time", "The dog", "Lily saw a", "One day"}
	alone := make([]string, len(prompts))
	body := func(p string) string {
		return fmt.Sprintf(`{"prompt":%q,"max_tokens":20,"temperature":0}`, p)
	}
	for i, p := range prompts {
		code, b := ts.post(t, "/v1/completions", body(p))
		if code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		alone[i] = string(b[strings.Index(string(b), `"text"`):])
	}
	var wg sync.WaitGroup
	got := make([]string, len(prompts))
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, b := ts.post(t, "/v1/completions", body(p))
			if j := strings.Index(string(b), `"text"`); j >= 0 {
				got[i] = string(b[j:])
			}
		}()
	}
	wg.Wait()
	for i := range prompts {
		if got[i] != alone[i] {
			t.Errorf("prompt %q: together %s, alone %s", prompts[i], got[i], alone[i])
		}
	}
}

// TestClientGoneFreesWorker: a streaming client that leaves mid-way frees
// the worker at once; while it streamed, /metrics and /health answered.
func TestClientGoneFreesWorker(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.url+"/v1/completions",
		strings.NewReader(`{"prompt":"Once upon a time","max_tokens":250,"temperature":0,"stream":true,"stop":["never seen"]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ { // a few tokens arrive
		if _, err := rd.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	// /metrics and /health answer while it generates: no token is counted
	// yet (a request's tokens are, once it ends).
	for _, p := range []string{"/metrics", "/health"} {
		r, err := http.Get(ts.url + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || (p == "/metrics" && strings.Contains(string(b), "doppler_tokens_generated_total{")) {
			t.Errorf("GET %s during a generation: %d, or it waited for the generation's end:\n%s", p, r.StatusCode, b)
		}
	}
	cancel()
	resp.Body.Close()
	code, b := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4,"temperature":0}`)
	if code != 200 {
		t.Fatalf("after a client left: %d %s", code, b)
	}
	// The first request stopped early: far fewer than its 250 tokens.
	if got := testutil.ToFloat64(ts.met.tokensOut.WithLabelValues(ts.id)); got >= 250 {
		t.Errorf("%v tokens generated: the gone client's generation ran on", got)
	}
}
