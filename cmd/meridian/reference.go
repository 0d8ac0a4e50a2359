package main

func reference() string { return "" }
