package web_test

import (
	"net/url"
	"strconv"
)

func urlEscape(s string) string { return url.QueryEscape(s) }
func itoa(n int) string         { return strconv.Itoa(n) }
