import CoreML
import Foundation
import Tokenizers

/// Greedy (or temperature) generation with the bundled stateful Core ML model: one MLState holds
/// the KV cache; each call passes `input_ids` [1, n] and a causal mask [1, 1, n, end], and the
/// model writes positions end - n ..< end and returns the last position's logits.
final class CoreMLGenerator: TextGenerator {
    let manifest: BundleManifest
    private let model: MLModel
    private let tokenizer: Tokenizer

    init() async throws {
        let (manifest, folder) = try BundleManifest.load()
        self.manifest = manifest
        guard let packageName = manifest.files.package else { throw DemoError.missing("no Core ML package in bundle.json") }
        let compiledName = (packageName as NSString).deletingPathExtension + ".mlmodelc"
        let config = MLModelConfiguration()
        config.computeUnits = .all
        model = try MLModel(contentsOf: folder.appendingPathComponent(compiledName), configuration: config)
        tokenizer = try await AutoTokenizer.from(modelFolder: folder)
    }

    /// Streams decoded text pieces; returns decode tokens/s.
    func generate(prompt: String, onText: @escaping (String) -> Void) async throws -> Double {
        let state = model.makeState()
        var ids = [manifest.bosId] + tokenizer.encode(text: prompt, addSpecialTokens: false)
        let budget = min(manifest.generation.maxNewTokens, manifest.contextLength - ids.count)
        guard budget > 0 else { throw DemoError.missing("the prompt does not fit the context of \(manifest.contextLength)") }
        var logits = try step(ids, end: ids.count, state: state)
        var generated: [Int] = []
        let start = Date()
        for _ in 0..<budget {
            let next = pick((0..<logits.count).map { logits[$0].floatValue }, temperature: manifest.generation.temperature)
            if manifest.eosIds.contains(next) { break }
            generated.append(next)
            onText(tokenizer.decode(tokens: [next]))
            ids.append(next)
            logits = try step([next], end: ids.count, state: state)
        }
        let seconds = Date().timeIntervalSince(start)
        return seconds > 0 ? Double(generated.count) / seconds : 0
    }

    private func step(_ tokens: [Int], end: Int, state: MLState) throws -> MLMultiArray {
        let n = tokens.count
        let input = try MLMultiArray(shape: [1, NSNumber(value: n)], dataType: .int32)
        for (i, t) in tokens.enumerated() { input[[0, NSNumber(value: i)]] = NSNumber(value: t) }
        let mask = try MLMultiArray(shape: [1, 1, NSNumber(value: n), NSNumber(value: end)], dataType: .float16)
        for q in 0..<n {
            for k in 0..<end {
                mask[[0, 0, NSNumber(value: q), NSNumber(value: k)]] = NSNumber(value: k <= end - n + q ? 0 : -Float.infinity)
            }
        }
        let features = try MLDictionaryFeatureProvider(dictionary: ["input_ids": input, "causal_mask": mask])
        let out = try model.prediction(from: features, using: state)
        guard let logits = out.featureValue(for: "logits")?.multiArrayValue else { throw DemoError.missing("no logits") }
        return logits
    }
}
