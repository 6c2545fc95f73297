package main

import "errors"

func startEmbraft(settings, string, int) (cluster, error) {
	return nil, errors.New("embraft side not built yet")
}
