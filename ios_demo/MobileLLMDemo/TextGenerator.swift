import Foundation

/// What the chat screen needs of a model: its bundle manifest and streamed generation returning
/// decode tokens/s. Core ML (iOS 18+) and Core AI (iOS 27+) bundles each have one.
protocol TextGenerator: AnyObject {
    var manifest: BundleManifest { get }
    func generate(prompt: String, onText: @escaping (String) -> Void) async throws -> Double
}

/// The generator for the bundled model's backend (bundle.json's "backend").
func makeGenerator() async throws -> any TextGenerator {
    let (manifest, _) = try BundleManifest.load()
    switch manifest.backend {
    case "coreai":
        #if canImport(CoreAI)
        if #available(iOS 27.0, macOS 27.0, *) { return try await CoreAIGenerator() }
        #endif
        throw DemoError.missing("this bundle holds a Core AI model, which needs iOS 27; bundle a Core ML artifact for iOS 18-26")
    default:
        return try await CoreMLGenerator()
    }
}

/// Greedy at temperature 0, else sampling from the softmax of logits / temperature.
func pick(_ logits: [Float], temperature: Double) -> Int {
    if temperature <= 0 { return logits.indices.max { logits[$0] < logits[$1] } ?? 0 }
    let maxLogit = Double(logits.max() ?? 0)
    let weights = logits.map { exp((Double($0) - maxLogit) / temperature) }
    var r = Double.random(in: 0..<weights.reduce(0, +))
    for (i, w) in weights.enumerated() { r -= w; if r <= 0 { return i } }
    return logits.count - 1
}
